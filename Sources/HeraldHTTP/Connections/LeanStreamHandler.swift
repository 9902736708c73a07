import HeraldCore
import HTTPTypes
import Metrics
import NIOCore

/// The only handler of a served HTTP/1.1 connection until its first request has arrived. If that request is a
/// stream the node can open at once (`StreamRequest(head:)` reads its bytes, gathered if they come in pieces;
/// `StreamRoute.openNow` opens it, after waiting for another stream of the thread that is opening the whole way
/// when there is one), the connection becomes that stream with no HTTP handler at all: this handler
/// writes the response head and, when the stream ends, the last chunk, and a `StreamOutlet` behind it writes the
/// frames. Anything else (another request, anything `StreamRequest` declines or the open refuses) gets the full
/// HTTP pipeline (`LimitedHTTPChannel`'s, with `RequestHandoff`), which is handed the bytes as they arrived, and
/// this handler leaves.
///
/// Why: most connections to a hub are streams, and opening one through the HTTP pipeline cost more than the open
/// itself (adding nine handlers, decoding the head into NIO's and then HTTPTypes' parts, encoding the response
/// head, removing the handlers at the end). The first head's clock (`headerTimeoutSeconds`, from accept) runs
/// here, and on in the `RequestTimeoutHandler` of the full pipeline.
final class LeanStreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Sets up the full HTTP pipeline behind this handler; the first head is due by the deadline given.
    typealias FullPipeline = (_ channel: any Channel, _ firstHeadDue: NIODeadline?) throws -> Void

    private enum State {
        case awaitingRequest
        /// A plain stream request whose thread is opening for another stream (`StreamRoute.OpenNow.afterOpening`):
        /// asked again when that is over.
        case waitingForThread(StreamRequest, head: ByteBuffer)
        case streaming(StreamConnection)
        /// The full pipeline has the connection; this handler is on its way out.
        case passed
    }

    private let runner: RequestHandoff.Runner
    /// The handoff of the full pipeline, whose fate (stream, HTTP, closed) tells the child channel whether it
    /// needs Hummingbird: a stream opened here settles it too.
    private let handoff: RequestHandoff
    private let limits: ConnectionLimits
    private let fullPipeline: FullPipeline
    private var state = State.awaitingRequest
    /// What arrived so far of a head that may be a plain stream request's, when TCP or TLS split it.
    private var headSoFar: ByteBuffer?
    private var context: ChannelHandlerContext?
    private var headClock: (due: NIODeadline, timer: Scheduled<Void>)?

    init(runner: RequestHandoff.Runner, handoff: RequestHandoff, limits: ConnectionLimits, fullPipeline: @escaping FullPipeline) {
        self.runner = runner
        self.handoff = handoff
        self.limits = limits
        self.fullPipeline = fullPipeline
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { startHeadClock(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        headClock?.timer.cancel()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        startHeadClock(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .awaitingRequest, .waitingForThread: handoff.fateIs(.closed)
        case .streaming, .passed: break
        }
        context.fireChannelInactive()
    }

    private func startHeadClock(_ context: ChannelHandlerContext) {
        guard headClock == nil, case .awaitingRequest = state else { return }
        let due = RequestTimeoutHandler.deadline(.header, limits)
        let timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) {
            guard case .awaitingRequest = self.state else { return }
            RequestTimeoutHandler.countClosed(.header)
            self.context?.close(promise: nil)
        }
        headClock = (due, timer)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .streaming:
            // An event-stream client has nothing more to say.
            return
        case .passed:
            context.fireChannelRead(data)
        case .waitingForThread(_, var head):
            // More than the one request: not a plain stream client, which the full pipeline serves.
            head.writeImmutableBuffer(unwrapInboundIn(data))
            passToFullPipeline(head, context: context)
        case .awaitingRequest:
            let arrived = unwrapInboundIn(data)
            var gathered = headSoFar.take()
            gathered?.writeImmutableBuffer(arrived)
            let bytes = gathered ?? arrived
            switch StreamRequest.progress(of: bytes) {
            case .incomplete:
                // A first piece is copied into a buffer of its own, so that the channel reuses its read buffer. The
                // head's clock, started at the accept, goes on.
                if gathered == nil {
                    gathered = context.channel.allocator.buffer(capacity: arrived.readableBytes + 512)
                    gathered?.writeImmutableBuffer(arrived)
                }
                headSoFar = gathered
                return
            case .complete:
                headClock?.timer.cancel()
                if let request = StreamRequest(head: bytes) {
                    open(request, head: bytes, context: context)
                    return
                }
            case .other:
                headClock?.timer.cancel()
            }
            passToFullPipeline(bytes, context: context)
        }
    }

    /// Opens the stream on the loop, or waits for the thread's open in flight (`mayWait`, the first time), or passes
    /// the request (`head`, its bytes) to the full pipeline.
    private func open(_ request: StreamRequest, head: ByteBuffer, context: ChannelHandlerContext, mayWait: Bool = true) {
        switch runner.openStreamNow?(request, mayWait, context.eventLoop, runner.logger, StreamOutlet.attacher(context.channel)) {
        case .opened(let response, let stream):
            begin(response, stream, context: context)
        case .afterOpening(let opened):
            state = .waitingForThread(request, head: head)
            opened.assumeIsolated().whenComplete { _ in self.askAgain() }
        case .declined(let claim):
            // Released once the full pipeline has answered and closed, if the route has not taken it over.
            if let claim { context.channel.closeFuture.whenComplete { _ in claim.release() } }
            passToFullPipeline(head, context: context)
        case nil:
            passToFullPipeline(head, context: context)
        }
    }

    /// The open of the thread this request waited for is over: the stream opens on the loop if it can now, and goes
    /// through the full pipeline if not.
    private func askAgain() {
        guard case .waitingForThread(let request, let head) = state, let context else { return }
        open(request, head: head, context: context, mayWait: false)
    }

    /// The stream is open (its frames wait in the outlet): the head goes out, then whatever waits.
    private func begin(_ response: HTTPResponse, _ stream: StreamConnection, context: ChannelHandlerContext) {
        state = .streaming(stream)
        handoff.fateIs(.stream)
        StreamRoute.openedWithoutPipeline.increment()
        context.write(wrapOutboundOut(Self.chunkedHead(response, allocator: context.channel.allocator)), promise: nil)
        (try? context.pipeline.syncOperations.handler(type: StreamOutlet.self))?.headWritten()
        context.flush()
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        stream.whenFinished { reason in
            StreamRoute.count(reason)
            handler.value.endStream(reason)
        }
    }

    /// The stream ended: the response's last chunk (not to a client that hung up: it would only draw a reset),
    /// and the connection closes.
    private func endStream(_ reason: StreamConnection.EndReason) {
        guard let context else { return }
        if reason != .clientGone {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(staticString: "0\r\n\r\n")), promise: nil)
        }
        context.close(promise: nil)
    }

    private func passToFullPipeline(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        state = .passed
        do {
            try fullPipeline(context.channel, headClock?.due)
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// The client's end of input, and the server's shutdown: before a request, the connection closes; a stream
    /// ends on shutdown (its client reconnects elsewhere), and on end of input through its outlet.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch state {
        case .awaitingRequest, .waitingForThread:
            if event is ChannelShouldQuiesceEvent || (event as? ChannelEvent) == .inputClosed {
                context.close(promise: nil)
                return
            }
        case .streaming(let stream) where event is ChannelShouldQuiesceEvent:
            stream.end(.shutdown)
            return
        case .streaming, .passed:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The head `HTTPResponseEncoder` would write for `response` with a body of unknown length, in HTTP/1.1.
    static func chunkedHead(_ response: HTTPResponse, allocator: ByteBufferAllocator) -> ByteBuffer {
        var head = allocator.buffer(capacity: 256)
        head.writeStaticString("HTTP/1.1 ")
        head.writeString(String(response.status.code))
        head.writeStaticString(" ")
        head.writeString(response.status.reasonPhrase)
        head.writeStaticString("\r\n")
        for field in response.headerFields where field.name != .contentLength {
            head.writeString(field.name.rawName)
            head.writeStaticString(": ")
            head.writeString(field.value)
            head.writeStaticString("\r\n")
        }
        head.writeStaticString("transfer-encoding: chunked\r\n\r\n")
        return head
    }
}
