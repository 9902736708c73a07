import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// One SSE client's place in the hub: a bounded queue between the Redis subscriber's event loop (which pushes
/// the shared frame buffers) and the task writing to the client's socket (which pulls them).
public final class StreamConnection: Sendable {
    public enum Item: Sendable {
        /// A complete frame, the same buffer every local subscriber of the thread gets.
        case frame(ByteBuffer)
        case heartbeat
        /// Frames may have been missed (the subscriber connection dropped): read the log before going on.
        case catchUp
    }

    public enum EndReason: String, Sendable {
        case clientGone = "client_gone"
        case slowConsumer = "slow_consumer"
        case threadDeleted = "thread_deleted"
        case shutdown
    }

    public struct Limits: Sendable {
        public var maxFrames: Int
        public var maxBytes: Int
        public init(maxFrames: Int, maxBytes: Int) {
            self.maxFrames = maxFrames
            self.maxBytes = maxBytes
        }
    }

    private struct State {
        var items = CircularBuffer<Item>(initialCapacity: 8)
        var queuedFrames = 0
        var queuedBytes = 0
        var heartbeatPending = false
        /// The node's subscriber connection is down: a queued `catchUp` waits until it is back, because a log
        /// read before the channel is subscribed again would miss what is published in between.
        var subscriberDown = false
        var waiter: CheckedContinuation<Item?, Never>?
        var endReason: EndReason?
        var endHandler: (@Sendable (EndReason) -> Void)?

        /// Removes and returns the first item that may be sent now.
        mutating func popDeliverable() -> Item? {
            guard let first = items.first else { return nil }
            if case .catchUp = first, subscriberDown, endReason == nil { return nil }
            switch items.removeFirst() {
            case .frame(let frame):
                queuedFrames -= 1
                queuedBytes -= frame.readableBytes
                return .frame(frame)
            case let item:
                return item
            }
        }
    }

    public let id: UInt64
    public let thread: UUID
    let limits: Limits
    private let state = NIOLockedValueBox(State())
    private let onEnd: @Sendable (StreamConnection, EndReason) -> Void

    init(id: UInt64, thread: UUID, limits: Limits, onEnd: @escaping @Sendable (StreamConnection, EndReason) -> Void) {
        self.id = id
        self.thread = thread
        self.limits = limits
        self.onEnd = onEnd
    }

    public var endReason: EndReason? { state.withLockedValue { $0.endReason } }

    /// Calls `handler` once the connection ends (at once if it has ended already), e.g. to close the socket of a
    /// slow consumer whose writer is stuck in a write.
    public func whenEnded(_ handler: @escaping @Sendable (EndReason) -> Void) {
        let ended: EndReason? = state.withLockedValue { state in
            if let reason = state.endReason { return reason }
            state.endHandler = handler
            return nil
        }
        if let ended { handler(ended) }
    }

    /// Queues a frame. A client whose backlog passes the limits is ended as a slow consumer: the hub never
    /// buffers without bound and never waits for one client.
    func push(_ frame: ByteBuffer) {
        enqueue(.frame(frame), bytes: frame.readableBytes)
    }

    /// The subscriber connection dropped: frames may be missed until it is back. The catch-up queued here is
    /// held back until `subscriberReady()`; live frames that arrive after it are sent after it.
    func pushCatchUp() {
        enqueue(.catchUp, bytes: 0)
    }

    /// The subscriber connection is back with every channel subscribed: a held-back catch-up may read the log.
    func subscriberReady() {
        let resume: (CheckedContinuation<Item?, Never>, Item)? = state.withLockedValue { state in
            state.subscriberDown = false
            guard let waiter = state.waiter, let item = state.popDeliverable() else { return nil }
            state.waiter = nil
            return (waiter, item)
        }
        if let (waiter, item) = resume { waiter.resume(returning: item) }
    }

    public func pushHeartbeat() {
        let waiter: CheckedContinuation<Item?, Never>? = state.withLockedValue { state in
            guard state.endReason == nil else { return nil }
            // A waiting writer has nothing it may send now: the heartbeat goes out at once.
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.heartbeatPending = true
            return nil
        }
        waiter?.resume(returning: .heartbeat)
    }

    private func enqueue(_ item: Item, bytes: Int) {
        enum Action { case none, resume(CheckedContinuation<Item?, Never>), overflow }
        let action: Action = state.withLockedValue { state in
            guard state.endReason == nil else { return .none }
            if case .catchUp = item {
                state.subscriberDown = true
            } else if let waiter = state.waiter {
                // The writer waits only when nothing queued may be sent; a frame behind a held-back catch-up
                // must wait for it.
                if state.items.isEmpty {
                    state.waiter = nil
                    return .resume(waiter)
                }
            }
            if case .frame = item {
                guard state.queuedFrames < limits.maxFrames, state.queuedBytes + bytes <= limits.maxBytes else {
                    return .overflow
                }
                state.queuedFrames += 1
                state.queuedBytes += bytes
            }
            state.items.append(item)
            return .none
        }
        switch action {
        case .none: break
        case .resume(let waiter): waiter.resume(returning: item)
        case .overflow: end(.slowConsumer)
        }
    }

    /// Ends the connection. Queued frames are dropped, except after `threadDeleted`, whose own frame is queued
    /// last and is still delivered.
    public func end(_ reason: EndReason) {
        let (waiter, first, handler): (CheckedContinuation<Item?, Never>?, Bool, (@Sendable (EndReason) -> Void)?) = state.withLockedValue { state in
            guard state.endReason == nil else { return (nil, false, nil) }
            state.endReason = reason
            state.heartbeatPending = false
            if reason != .threadDeleted {
                state.items.removeAll()
                state.queuedFrames = 0
                state.queuedBytes = 0
            }
            let waiter = state.waiter
            state.waiter = nil
            let handler = state.endHandler
            state.endHandler = nil
            return (waiter, true, handler)
        }
        waiter?.resume(returning: nil)
        if first {
            onEnd(self, reason)
            handler?(reason)
        }
    }

    /// The frames queued right behind an item just taken, up to `limit`, without waiting: a writer that fell
    /// behind sends its backlog in one write. Stops at anything that is not a frame (a held-back catch-up).
    func takeQueuedFrames(limit: Int) -> [ByteBuffer] {
        state.withLockedValue { state in
            var frames: [ByteBuffer] = []
            while frames.count < limit, case .frame? = state.items.first, case .frame(let frame)? = state.popDeliverable() {
                frames.append(frame)
            }
            return frames
        }
    }

    /// The next item to send, or nil once the connection has ended (and, after `threadDeleted`, drained).
    /// Queued frames come first; a heartbeat goes out when nothing else may be sent.
    func next() async -> Item? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Item?, Never>) in
                let ready: Item?? = state.withLockedValue { state in
                    if let item = state.popDeliverable() { return .some(item) }
                    if state.heartbeatPending {
                        state.heartbeatPending = false
                        return .some(.heartbeat)
                    }
                    if state.endReason != nil { return .some(nil) }
                    state.waiter = continuation
                    return .none
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            end(.clientGone)
        }
    }
}
