import HeraldCore
import HTTPTypes
import Metrics
import NIOCore
import NIOHTTP1

/// Closes a connection that is slow to deliver a request head or body, or that stays idle between requests.
///
/// A connection is always in one of four phases, each with its own clock:
/// - a head is awaited (from accept, or from the first byte of a later request): `headerTimeoutSeconds`;
/// - a body is being read (from its head): `bodyTimeoutSeconds`, for the whole body, so a trickle cannot
///   stretch it;
/// - a response is being written (an SSE stream for as long as it lasts): no clock at all, however long the
///   client stays silent — the stream's liveness is the heartbeat's business;
/// - nothing is in flight (after a response): `idleTimeoutSeconds`.
///
/// Sits right after the HTTP/1 decoder; `RequestStartObserver`, at the head of the pipeline, reports raw bytes so
/// the head's clock can start with its first byte rather than when the whole head has been decoded.
final class RequestTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart

    enum Reason: String {
        case header, body, idle
    }

    private let limits: ConnectionLimits
    private weak var context: ChannelHandlerContext?
    /// The running clock: which phase, and when it runs out.
    private var clock: (reason: Reason, deadline: NIODeadline)?
    private var timer: (task: Scheduled<Void>, deadline: NIODeadline)?
    /// Requests whose head has been read and whose response has not ended yet (more than one when pipelined).
    private var requestsInFlight = 0
    private var isReadingBody = false
    /// Bytes of a request have arrived (or the connection is new) and its head is not complete yet.
    private var isAwaitingHead = true

    /// When the first head is due, if its clock started before this handler was added (`LeanStreamHandler` reads
    /// a connection's first bytes before there is an HTTP pipeline).
    private var firstHeadDeadline: NIODeadline?

    init(limits: ConnectionLimits, firstHeadDeadline: NIODeadline? = nil) {
        self.limits = limits
        self.firstHeadDeadline = firstHeadDeadline
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { arm(.header) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopTimer()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(.header)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopTimer()
        context.fireChannelInactive()
    }

    /// Raw bytes arrived, before the decoder has seen them.
    func bytesArrived() {
        guard !isReadingBody, !isAwaitingHead else { return }
        isAwaitingHead = true
        if requestsInFlight == 0 { arm(.header) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            isAwaitingHead = false
            isReadingBody = true
            requestsInFlight += 1
            arm(.body)
        case .body:
            break
        case .end:
            isReadingBody = false
            // Its response may be complete already (an early 413, say): then the connection is idle from here.
            if requestsInFlight > 0 { disarm() } else { arm(isAwaitingHead ? .header : .idle) }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            requestsInFlight -= 1
            // A response that ends before its request's body leaves the body's clock running.
            if requestsInFlight == 0, !isReadingBody {
                arm(isAwaitingHead ? .header : .idle)
            }
        }
        context.write(data, promise: promise)
    }

    /// Starts `reason`'s clock. One timer serves all the clocks: a request moves the deadline several times
    /// (header, body, idle), and scheduling and cancelling a task each time cost more than the request's other
    /// bookkeeping. A timer due before the new deadline fires and schedules itself for the rest.
    private func arm(_ reason: Reason) {
        guard let context else { return }
        let deadline = (reason == .header ? firstHeadDeadline.take() : nil) ?? Self.deadline(reason, limits)
        clock = (reason, deadline)
        if let timer, timer.deadline <= deadline { return }
        schedule(at: deadline, context)
    }

    private func disarm() {
        clock = nil
    }

    private func stopTimer() {
        clock = nil
        timer?.task.cancel()
        timer = nil
    }

    private func schedule(at deadline: NIODeadline, _ context: ChannelHandlerContext) {
        timer?.task.cancel()
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { self.timerFired() }
        timer = (task, deadline)
    }

    private func timerFired() {
        timer = nil
        guard let context, let (reason, deadline) = clock else { return }
        guard deadline <= .now() else {
            schedule(at: deadline, context)
            return
        }
        clock = nil
        Self.countClosed(reason)
        if reason == .body {
            // Hummingbird takes the end of input for the end of a body: without an error, the route would get
            // the bytes that did arrive as if they were the whole body.
            context.fireErrorCaught(
                APIError(.requestTimeout, "request_timeout", "the request body did not arrive within \(Self.seconds(reason, limits)) s")
            )
        }
        context.close(promise: nil)
    }

    /// When `reason`'s clock, started now, runs out.
    static func deadline(_ reason: Reason, _ limits: ConnectionLimits) -> NIODeadline {
        .now() + .nanoseconds(Int64(seconds(reason, limits) * 1_000_000_000))
    }

    /// A connection closed because `reason`'s clock ran out.
    static func countClosed(_ reason: Reason) {
        Counter(label: "herald_connections_closed_total", dimensions: [("reason", reason.rawValue)]).increment()
    }

    private static func seconds(_ reason: Reason, _ limits: ConnectionLimits) -> Double {
        switch reason {
        case .header: limits.headerTimeoutSeconds
        case .body: limits.bodyTimeoutSeconds
        case .idle: limits.idleTimeoutSeconds
        }
    }
}

/// Tells `RequestTimeoutHandler` when raw bytes arrive; installed first in the pipeline.
final class RequestStartObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let timeouts: RequestTimeoutHandler

    init(reportingTo timeouts: RequestTimeoutHandler) {
        self.timeouts = timeouts
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        timeouts.bytesArrived()
        context.fireChannelRead(data)
    }
}
