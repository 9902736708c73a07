import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// One SSE client's stream, driven on the event loop that owns the client's channel: the preamble, the catch-up
/// from the log, then live frames, each exactly once, written straight to the channel as the hub delivers them
/// (no task, no continuation per frame).
///
/// Gapless resume: the stream is registered and subscribed before the log is read, so frames published during a
/// catch-up wait in its queue; afterwards, queued frames the catch-up already sent (id ≤ last sent) are dropped.
/// While the client is not writable, frames wait in the same bounded queue and go out together when it is again;
/// a client whose queue passes the limits is cut as a slow consumer.
public final class StreamConnection: Sendable {
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

    /// Where the client says it is.
    public enum Start: Sendable, Equatable {
        /// No `Last-Event-ID`: live from now.
        case live
        /// Resume after this id (`0-0`: everything the log holds).
        case after(StreamID)
        /// The client sent an id that is not a stream id: tell it to refetch, then go live.
        case malformed
    }

    /// How heartbeats are written.
    public enum Heartbeat: Sendable, Equatable {
        /// `: heartbeat`, which keeps proxies from closing an idle stream.
        case comment
        /// `event: heartbeat` with the interval, also sent right after connecting, so that a browser can tell a
        /// stale connection (no frame or heartbeat for a while) from a quiet thread.
        case event(intervalSeconds: Double)
        /// None from the stream: its transport keeps the connection alive itself (WebSocket pings).
        case byTransport
    }

    /// What `begin` needs to send the start of the stream.
    public struct Beginning: Sendable {
        public var start: Start
        /// Where a catch-up starts when nothing has been sent yet: the log's newest id when the stream opened.
        public var baseline: StreamID
        public var heartbeat: Heartbeat
        public var replayer: LogReplayer
        public var logger: Logger
        /// A stream ended by the node's shutdown tells its client to reconnect after a random delay up to this
        /// (a final `retry:`), so a node's clients do not all land on the others in the same second.
        public var reconnectSpreadSeconds: Double

        public init(
            start: Start, baseline: StreamID, heartbeat: Heartbeat, replayer: LogReplayer, logger: Logger,
            reconnectSpreadSeconds: Double = 0
        ) {
            self.start = start
            self.baseline = baseline
            self.heartbeat = heartbeat
            self.replayer = replayer
            self.logger = logger
            self.reconnectSpreadSeconds = reconnectSpreadSeconds
        }
    }

    private enum Phase {
        /// Registered, not begun: frames are queued.
        case opening
        /// Reading the log; frames are queued.
        case replaying
        /// The node's subscriber connection is down: a log read now would miss what is published before it is
        /// back, so the catch-up waits; frames are queued.
        case waitingForSubscriber
        case live
        case ended
    }

    /// Everything the stream changes as it runs; touched only on `eventLoop`.
    private final class LoopState {
        var phase = Phase.opening
        var sink: (any StreamSink)?
        var queue = CircularBuffer<OutgoingFrame>(initialCapacity: 4)
        var queuedBytes = 0
        /// The newest id sent; queued frames at or below it were already sent by a catch-up.
        var lastSentID: StreamID?
        var beginning: Beginning?
        var heartbeat: OutgoingFrame?
        var subscriberDown = false
        /// The subscriber dropped while the stream was opening or replaying: catch up once that is done.
        var catchUpAfterReplay = false
        var needsFlush = false
    }

    private struct Ending {
        var reason: EndReason?
        /// The loop side is done: nothing more is written by the hub.
        var finished = false
        var waiter: CheckedContinuation<EndReason, Never>?
        var finishHandler: (@Sendable (EndReason) -> Void)?
    }

    public let id: UInt64
    public let thread: UUID
    public let eventLoop: any EventLoop
    let limits: Limits
    private let state: NIOLoopBoundBox<LoopState>
    private let ending = NIOLockedValueBox(Ending())
    private let onEnd: @Sendable (StreamConnection, EndReason) -> Void

    init(
        id: UInt64, thread: UUID, eventLoop: any EventLoop, limits: Limits,
        onEnd: @escaping @Sendable (StreamConnection, EndReason) -> Void
    ) {
        self.id = id
        self.thread = thread
        self.eventLoop = eventLoop
        self.limits = limits
        self.state = .makeBoxSendingValue(LoopState(), eventLoop: eventLoop)
        self.onEnd = onEnd
    }

    public var endReason: EndReason? { ending.withLockedValue { $0.reason } }

    /// Returns once the stream has ended and the hub writes nothing more to its sink; the caller may then finish
    /// the response.
    public func ended() async -> EndReason {
        await withCheckedContinuation { (continuation: CheckedContinuation<EndReason, Never>) in
            let finished: EndReason? = ending.withLockedValue { ending in
                if ending.finished, let reason = ending.reason { return reason }
                ending.waiter = continuation
                return nil
            }
            if let finished { continuation.resume(returning: finished) }
        }
    }

    /// Calls `handler` once the stream has ended and the hub writes nothing more to its sink (at once if that
    /// has happened): the way to finish the response without a task waiting in `ended()`.
    public func whenFinished(_ handler: @escaping @Sendable (EndReason) -> Void) {
        let finished: EndReason? = ending.withLockedValue { ending in
            if ending.finished, let reason = ending.reason { return reason }
            ending.finishHandler = handler
            return nil
        }
        if let finished { handler(finished) }
    }

    /// Ends the stream, from any thread; the first reason counts. Queued frames are dropped, except after
    /// `threadDeleted`, whose own frame is the last one sent.
    public func end(_ reason: EndReason) {
        let first = ending.withLockedValue { ending -> Bool in
            guard ending.reason == nil else { return false }
            ending.reason = reason
            return true
        }
        guard first else { return }
        onEnd(self, reason)
        if eventLoop.inEventLoop {
            tearDown(reason)
        } else {
            eventLoop.execute { self.tearDown(reason) }
        }
    }

    // MARK: On the event loop

    /// Attaches the client's channel and sends the start of the stream: the preamble, then the catch-up the
    /// client asked for (or a `resync`), then whatever was queued meanwhile.
    public func begin(sink: any StreamSink, _ beginning: Beginning) {
        let state = self.state.value
        state.sink = sink
        state.beginning = beginning
        var preamble = ByteBuffer(string: FrameEncoder.preamble)
        if let text = Self.heartbeatText(beginning.heartbeat) {
            let heartbeat = ByteBuffer(string: text)
            state.heartbeat = OutgoingFrame(heartbeat, id: nil)
            if case .event = beginning.heartbeat { preamble.writeImmutableBuffer(heartbeat) }
        }
        write(preamble, state)
        switch state.phase {
        case .opening:
            switch beginning.start {
            case .live:
                goLive(state)
            case .malformed:
                write(resyncFrame(latestID: nil, reason: "malformed_last_event_id"), state)
                goLive(state)
            case .after(let seen):
                state.lastSentID = seen
                replay(after: seen, seenByClient: true, state)
            }
        case .ended:
            // Ended while opening: only a thread's deletion leaves something to send.
            if endReason == .threadDeleted { writeQueue(state) }
            flush(state)
            state.sink = nil
            finish()
            return
        case .replaying, .waitingForSubscriber, .live:
            preconditionFailure("a stream begins once")
        }
        flush(state)
    }

    /// A live frame for this stream, written (and flushed with what the batch wrote before it, if `flushing`) or
    /// queued. A batch of deliveries flushes each stream once, with its last frame.
    func receive(_ frame: OutgoingFrame, flushing: Bool) {
        let state = self.state.value
        switch state.phase {
        case .ended:
            return
        case .live where state.queue.isEmpty && state.sink?.isWritable == true:
            if flushing, !state.needsFlush, let sink = state.sink {
                if isNew(frame, state) { sink.writeAndFlush(frame) }
                return
            }
            writeLive(frame, state)
        case .opening, .replaying, .waitingForSubscriber, .live:
            let bytes = frame.bytes.readableBytes
            guard state.queue.count < limits.maxFrames, state.queuedBytes + bytes <= limits.maxBytes else {
                end(.slowConsumer)
                return
            }
            state.queue.append(frame)
            state.queuedBytes += bytes
        }
        if flushing { flush(state) }
    }

    /// Frames waiting for the client (it is behind, or a catch-up is in progress).
    var queuedFrames: Int { state.value.queue.count }

    /// Sends what `receive` and `heartbeat` wrote.
    func flushIfNeeded() {
        flush(state.value)
    }

    /// The client caught up with what it was sent: the queued backlog goes out in one write.
    public func sinkBecameWritable() {
        let state = self.state.value
        guard case .live = state.phase else { return }
        writeQueue(state)
        flush(state)
    }

    /// Writes a heartbeat to a begun stream whose client keeps up; true when it needs `flush()`.
    func heartbeat() -> Bool {
        let state = self.state.value
        switch state.phase {
        case .opening, .ended:
            return false
        case .replaying, .waitingForSubscriber, .live:
            guard let heartbeat = state.heartbeat, state.sink?.isWritable == true else { return false }
            return write(heartbeat, state)
        }
    }

    /// The node's subscriber connection dropped: frames may be missed until it is back, so the stream queues
    /// them and reads the log once `subscriberReady()`.
    func subscriberLost() {
        let state = self.state.value
        state.subscriberDown = true
        switch state.phase {
        case .live: state.phase = .waitingForSubscriber
        case .opening, .replaying: state.catchUpAfterReplay = true
        case .waitingForSubscriber, .ended: break
        }
    }

    /// The subscriber connection is back with every channel subscribed: a waiting catch-up may read the log.
    func subscriberReady() {
        let state = self.state.value
        state.subscriberDown = false
        if case .waitingForSubscriber = state.phase { catchUp(state) }
    }

    private func goLive(_ state: LoopState) {
        if state.catchUpAfterReplay {
            state.catchUpAfterReplay = false
            if state.subscriberDown {
                state.phase = .waitingForSubscriber
            } else {
                catchUp(state)
            }
            return
        }
        state.phase = .live
        writeQueue(state)
    }

    private func catchUp(_ state: LoopState) {
        guard let beginning = state.beginning else { return }
        replay(after: state.lastSentID ?? beginning.baseline, seenByClient: false, state)
    }

    /// Reads the log after `seen` off the loop, retrying until it succeeds or the stream ends (Redis may be
    /// coming back), then sends it and goes live.
    private func replay(after seen: StreamID, seenByClient: Bool, _ state: LoopState) {
        guard let beginning = state.beginning else { return }
        state.phase = .replaying
        Task {
            var delay: Duration = .milliseconds(100)
            while endReason == nil {
                do {
                    let outcome = try await beginning.replayer.frames(of: thread, after: seen, seenByClient: seenByClient)
                    eventLoop.execute { self.replayed(outcome) }
                    return
                } catch {
                    beginning.logger.warning("catch-up read failed; retrying", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(2))
                }
            }
        }
    }

    private func replayed(_ outcome: LogReplayer.Outcome) {
        let state = self.state.value
        guard case .replaying = state.phase else { return }
        switch outcome {
        case .frames(let frames, let lastID):
            for frame in frames { write(frame, state) }
            if let lastID { state.lastSentID = max(state.lastSentID ?? lastID, lastID) }
        case .gap(let latestID):
            if let latestID { state.lastSentID = max(state.lastSentID ?? latestID, latestID) }
            write(resyncFrame(latestID: latestID, reason: "log_trimmed"), state)
        }
        goLive(state)
        flush(state)
    }

    /// Sends queued frames the client has not had, oldest first, while it keeps up.
    private func writeQueue(_ state: LoopState) {
        while let sink = state.sink, sink.isWritable || endReason == .threadDeleted, let frame = state.queue.popFirst() {
            state.queuedBytes -= frame.bytes.readableBytes
            writeLive(frame, state)
        }
    }

    /// Writes a live frame unless a catch-up already sent it; every id sent counts, so a later catch-up starts
    /// after the newest one.
    @discardableResult
    private func writeLive(_ frame: OutgoingFrame, _ state: LoopState) -> Bool {
        guard isNew(frame, state) else { return false }
        return write(frame, state)
    }

    /// Whether a live frame is to be sent (one with an id not newer than the last sent is not); counts it as sent.
    private func isNew(_ frame: OutgoingFrame, _ state: LoopState) -> Bool {
        if let id = frame.id {
            if let lastSentID = state.lastSentID, id <= lastSentID { return false }
            state.lastSentID = id
        }
        return true
    }

    /// Writes bytes of this stream's own (the preamble, a catch-up, a resync).
    @discardableResult
    private func write(_ buffer: ByteBuffer, _ state: LoopState) -> Bool {
        guard buffer.readableBytes > 0 else { return false }
        return write(OutgoingFrame(buffer, id: nil), state)
    }

    @discardableResult
    private func write(_ frame: OutgoingFrame, _ state: LoopState) -> Bool {
        guard let sink = state.sink else { return false }
        sink.write(frame)
        let first = !state.needsFlush
        state.needsFlush = true
        return first
    }

    private func flush(_ state: LoopState) {
        guard state.needsFlush else { return }
        state.needsFlush = false
        state.sink?.flush()
    }

    private func tearDown(_ reason: EndReason) {
        let state = self.state.value
        state.phase = .ended
        if reason == .threadDeleted {
            writeQueue(state)
            flush(state)
        } else {
            state.queue.removeAll()
            state.queuedBytes = 0
        }
        if reason == .shutdown, let spread = state.beginning?.reconnectSpreadSeconds, spread > 0 {
            write(ByteBuffer(string: "retry: \(Int.random(in: 0...Int(spread * 1000)))\n\n"), state)
            flush(state)
        }
        if reason == .slowConsumer { state.sink?.close() }
        // Not begun yet: `begin` finishes once it has sent what a deletion leaves.
        guard state.sink != nil else { return }
        state.sink = nil
        finish()
    }

    private func finish() {
        let (waiter, handler, reason) = ending.withLockedValue { ending in
            ending.finished = true
            defer {
                ending.waiter = nil
                ending.finishHandler = nil
            }
            return (ending.waiter, ending.finishHandler, ending.reason)
        }
        guard let reason else { return }
        waiter?.resume(returning: reason)
        handler?(reason)
    }

    private static func heartbeatText(_ heartbeat: Heartbeat) -> String? {
        switch heartbeat {
        case .comment: FrameEncoder.heartbeat
        case .event(let intervalSeconds): FrameEncoder.heartbeatEvent(intervalSeconds: intervalSeconds)
        case .byTransport: nil
        }
    }

    private func resyncFrame(latestID: StreamID?, reason: String) -> ByteBuffer {
        let body = ByteBuffer(bytes: FrameEncoder.body(of: .resync(.init(threadID: thread, reason: reason))))
        guard let latestID else { return body }
        return FrameEncoder.frame(id: latestID.description, body: body, allocator: ByteBufferAllocator())
    }
}
