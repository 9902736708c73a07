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
    private var timer: Scheduled<Void>?
    /// Requests whose head has been read and whose response has not ended yet (more than one when pipelined).
    private var requestsInFlight = 0
    private var isReadingBody = false
    /// Bytes of a request have arrived (or the connection is new) and its head is not complete yet.
    private var isAwaitingHead = true

    init(limits: ConnectionLimits) {
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { arm(.header) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(.header)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
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

    private func arm(_ reason: Reason) {
        disarm()
        guard let context else { return }
        let seconds = switch reason {
        case .header: limits.headerTimeoutSeconds
        case .body: limits.bodyTimeoutSeconds
        case .idle: limits.idleTimeoutSeconds
        }
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(seconds * 1_000_000_000))) {
            self.timer = nil
            Counter(label: "herald_connections_closed_total", dimensions: [("reason", reason.rawValue)]).increment()
            if reason == .body {
                // Hummingbird takes the end of input for the end of a body: without an error, the route would get
                // the bytes that did arrive as if they were the whole body.
                self.context?.fireErrorCaught(
                    APIError(.requestTimeout, "request_timeout", "the request body did not arrive within \(seconds) s")
                )
            }
            self.context?.close(promise: nil)
        }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
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
