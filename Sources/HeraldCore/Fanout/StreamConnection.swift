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
        var heartbeatQueued = false
        var waiter: CheckedContinuation<Item?, Never>?
        var endReason: EndReason?
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

    /// Queues a frame. A client whose backlog passes the limits is ended as a slow consumer: the hub never
    /// buffers without bound and never waits for one client.
    func push(_ frame: ByteBuffer) {
        enqueue(.frame(frame), bytes: frame.readableBytes)
    }

    func pushCatchUp() {
        enqueue(.catchUp, bytes: 0)
    }

    public func pushHeartbeat() {
        let waiter: CheckedContinuation<Item?, Never>? = state.withLockedValue { state in
            guard state.endReason == nil, !state.heartbeatQueued else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.heartbeatQueued = true
            state.items.append(.heartbeat)
            return nil
        }
        waiter?.resume(returning: .heartbeat)
    }

    private func enqueue(_ item: Item, bytes: Int) {
        enum Action { case none, resume(CheckedContinuation<Item?, Never>), overflow }
        let action: Action = state.withLockedValue { state in
            guard state.endReason == nil else { return .none }
            if let waiter = state.waiter {
                state.waiter = nil
                return .resume(waiter)
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
        let (waiter, first): (CheckedContinuation<Item?, Never>?, Bool) = state.withLockedValue { state in
            guard state.endReason == nil else { return (nil, false) }
            state.endReason = reason
            if reason != .threadDeleted {
                state.items.removeAll()
            }
            let waiter = state.waiter
            state.waiter = nil
            return (waiter, true)
        }
        waiter?.resume(returning: nil)
        if first { onEnd(self, reason) }
    }

    /// The next item to send, or nil once the connection has ended (and, after `threadDeleted`, drained).
    func next() async -> Item? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Item?, Never>) in
                let ready: Item?? = state.withLockedValue { state in
                    if let item = state.items.popFirst() {
                        switch item {
                        case .frame(let frame):
                            state.queuedFrames -= 1
                            state.queuedBytes -= frame.readableBytes
                        case .heartbeat:
                            state.heartbeatQueued = false
                        case .catchUp:
                            break
                        }
                        return .some(item)
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
