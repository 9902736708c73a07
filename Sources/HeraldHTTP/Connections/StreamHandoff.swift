import HeraldCore
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Runs stream requests (`GET /chats/sse/…`, and the WebSocket upgrade `GET /ws`) outside Hummingbird's
/// per-connection task.
///
/// Hummingbird keeps one task per connection for as long as the connection lives, and a task keeps the stack
/// its deepest call needed (middleware, token verification, the route) until it ends: about 20 KiB that an
/// open stream would hold for nothing, since its frames are written from the event loop. So this handler, right
/// after the HTTP codec (before Hummingbird's connection state and async channel), takes a stream request before
/// Hummingbird sees it, runs it through the same router
/// (middleware, authentication, errors) in a task of its own that ends once the stream has begun, and writes
/// the response head itself. When the stream ends, it ends the response and closes the connection.
///
/// A connection whose first request is a stream never gets a Hummingbird task at all (`firstRequest` tells the
/// child channel which it is); one whose first request is not gets its task and async channel only then, and a
/// stream it asks for later is still taken here, as long as no response of Hummingbird's is outstanding (so
/// pipelined responses keep their order). A WebSocket upgrade is taken only as a connection's first request: the
/// connection then becomes the `WebSocketSession`'s, with no HTTP handler left. Anything else passes through
/// untouched.
final class StreamHandoff: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// What runs a stream request: the application's router.
    struct Runner: Sendable {
        let responder: RouterResponder<HeraldRequestContext>
        let logger: Logger

        /// Whether a request is one this handler takes; `webSocket`: a WebSocket upgrade may be taken now.
        static func handles(_ head: HTTPRequest, webSocket: Bool) -> Bool {
            guard head.method == .get, let path = head.path else { return false }
            if path.hasPrefix("/chats/sse/") { return true }
            return webSocket && (path == "/ws" || path.hasPrefix("/ws?"))
        }
    }

    /// Where a route run here leaves what the connection becomes: the stream it opened, or a WebSocket session.
    final class Slot: Sendable {
        enum Taken: Sendable {
            case stream(StreamConnection)
            case webSocket(WebSocketSession.Setup)
        }

        private let taken = NIOLockedValueBox<Taken?>(nil)

        func hold(_ connection: StreamConnection) {
            taken.withLockedValue { $0 = .stream(connection) }
        }

        func hold(webSocket setup: WebSocketSession.Setup) {
            taken.withLockedValue { $0 = .webSocket(setup) }
        }

        var value: Taken? { taken.withLockedValue { $0 } }
    }

    /// How the connection's first request turned out.
    enum FirstRequest: Sendable {
        /// A stream, run here: the connection needs no Hummingbird task.
        case stream
        /// Anything else: held until `passToHummingbird()`.
        case http
        /// The connection closed before a request arrived.
        case closed
    }

    private enum Mode {
        case awaitingFirstRequest
        /// Parts of the first request, held while the child channel sets Hummingbird up.
        case holding([HTTPRequestPart])
        case passing
        /// A stream request is being run or streamed here; the client has nothing more to say.
        case streaming
    }

    private let runner: Runner
    /// Run on an HTTP/2 stream rather than an HTTP/1.1 connection: it cannot become a WebSocket (no extended
    /// CONNECT here), and the end of the client's input is the end of its request, not the client leaving.
    private let onHTTP2Stream: Bool
    private let firstRequestPromise: EventLoopPromise<FirstRequest>
    private var firstRequestKnown = false
    private var mode = Mode.awaitingFirstRequest
    /// Requests passed to Hummingbird whose response has not ended.
    private var outstanding = 0
    /// Whether Hummingbird serves this connection; if not, the connection closes after a response written here.
    private var hummingbirdServes = false
    private var context: ChannelHandlerContext?
    /// The stream this handler writes the response of, once it has begun.
    private var stream: StreamConnection?
    private var shuttingDown = false

    init(runner: Runner, eventLoop: any EventLoop, onHTTP2Stream: Bool = false) {
        self.runner = runner
        self.onHTTP2Stream = onHTTP2Stream
        self.firstRequestPromise = eventLoop.makePromise()
    }

    var firstRequest: EventLoopFuture<FirstRequest> { firstRequestPromise.futureResult }

    private func firstRequestIs(_ kind: FirstRequest) {
        guard !firstRequestKnown else { return }
        firstRequestKnown = true
        firstRequestPromise.succeed(kind)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        firstRequestIs(.closed)
    }

    func channelInactive(context: ChannelHandlerContext) {
        firstRequestIs(.closed)
        context.fireChannelInactive()
    }

    /// What Hummingbird does for its own requests is done here for the others: an end of input closes the
    /// connection (an SSE client's end of input means it is gone), and so does the server's shutdown, after
    /// ending a stream (`shutdown`) so that its client reconnects elsewhere.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        let closes = if case ChannelEvent.inputClosed = event { !onHTTP2Stream } else { event is ChannelShouldQuiesceEvent }
        let isHummingbirds = switch mode {
        case .awaitingFirstRequest, .streaming: false
        case .holding, .passing: true
        }
        guard closes, !isHummingbirds else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        if event is ChannelShouldQuiesceEvent {
            shuttingDown = true
            if let stream {
                stream.end(.shutdown)
                return
            }
            // A request being run here is answered first; a stream it opens is ended as soon as it has begun.
            if case .streaming = mode { return }
        }
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch mode {
        case .streaming:
            return
        case .holding(var parts):
            parts.append(part)
            mode = .holding(parts)
        case .awaitingFirstRequest:
            if case .head(let head) = part, Runner.handles(head, webSocket: !onHTTP2Stream) {
                run(head, context: context)
                firstRequestIs(.stream)
            } else {
                mode = .holding([part])
                firstRequestIs(.http)
            }
        case .passing:
            if case .head(let head) = part {
                if outstanding == 0, Runner.handles(head, webSocket: false) {
                    run(head, context: context)
                    return
                }
                outstanding += 1
            }
            context.fireChannelRead(data)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { outstanding -= 1 }
        context.write(data, promise: promise)
    }

    /// Hummingbird's async channel is in place behind this handler: the held first request goes to it.
    func passToHummingbird() {
        guard let context, case .holding(let parts) = mode else { return }
        hummingbirdServes = true
        mode = .passing
        for part in parts {
            if case .head = part { outstanding += 1 }
            context.fireChannelRead(wrapInboundOut(part))
        }
        context.fireChannelReadComplete()
    }

    private func run(_ head: HTTPRequest, context: ChannelHandlerContext) {
        mode = .streaming
        let runner = self.runner
        let channel = context.channel
        let handoff = NIOLoopBound(self, eventLoop: context.eventLoop)
        Task {
            let slot = Slot()
            let requestContext = HeraldRequestContext(source: .init(channel: channel, logger: runner.logger), handoff: slot)
            var response: Response
            do {
                response = try await runner.responder.respond(
                    to: Request(head: head, body: HummingbirdCore.RequestBody(buffer: ByteBuffer())), context: requestContext
                )
            } catch {
                response = Response(status: .internalServerError)
            }
            let head = response.head
            switch slot.value {
            case .stream(let stream)?:
                channel.eventLoop.execute { handoff.value.startStream(head, stream) }
                return
            case .webSocket(let setup)?:
                channel.eventLoop.execute { handoff.value.upgrade(head, setup) }
                return
            case nil:
                break
            }
            let body = BufferingBodyWriter()
            do {
                try await response.body.write(body)
            } catch {
                channel.close(promise: nil)
                return
            }
            let buffers = body.buffers
            channel.eventLoop.execute { handoff.value.respond(head, buffers) }
        }
    }

    /// The stream began on the loop before the route returned; its frames wait in the outlet for this head.
    private func startStream(_ head: HTTPResponse, _ stream: StreamConnection) {
        guard let context else { return }
        // The route's response has no body of its own; the stream's length is open (chunked).
        var head = head
        head.headerFields[.contentLength] = nil
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        self.stream = stream
        if shuttingDown { stream.end(.shutdown) }
        let handoff = NIOLoopBound(self, eventLoop: context.eventLoop)
        stream.whenFinished { reason in
            StreamRoute.count(reason)
            handoff.value.endStream()
        }
    }

    /// The upgrade was accepted: `101` goes out, and the connection's HTTP handlers make way for the session.
    private func upgrade(_ head: HTTPResponse, _ setup: WebSocketSession.Setup) {
        guard let context, context.channel.isActive, !shuttingDown else {
            setup.abandon()
            self.context?.close(promise: nil)
            return
        }
        var head = head
        head.headerFields[.contentLength] = nil
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        let pipeline = context.pipeline.syncOperations
        do {
            let httpHandlers: [any RemovableChannelHandler] = [
                try pipeline.handler(type: RequestStartObserver.self),
                try pipeline.handler(type: HTTPResponseEncoder.self),
                try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self),
                try pipeline.handler(type: MalformedRequestResponder.self),
                try pipeline.handler(type: RequestTimeoutHandler.self),
                try pipeline.handler(type: ConnectionPersistenceHandler.self),
                try pipeline.handler(type: HTTP1ToHTTPServerCodec.self),
                try pipeline.handler(type: HTTPConnectionStateHandler.self),
                self,
            ]
            try WebSocketSession.install(setup, replacingHTTPOf: pipeline, httpHandlers: httpHandlers)
        } catch {
            setup.abandon()
            context.close(promise: nil)
        }
    }

    private func endStream() {
        stream = nil
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.close(promise: nil)
    }

    /// A response that is not a stream (an error, say): written whole; the connection stays Hummingbird's if it
    /// was, and is closed if not.
    private func respond(_ head: HTTPResponse, _ body: [ByteBuffer]) {
        guard let context else { return }
        var head = head
        let staysOpen = hummingbirdServes && !shuttingDown
        if !staysOpen { head.headerFields[.connection] = "close" }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        for buffer in body {
            context.write(wrapOutboundOut(.body(buffer)), promise: nil)
        }
        if staysOpen {
            mode = .passing
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }
}

/// Collects a response body that is not a stream, to be written in one go on the event loop.
private final class BufferingBodyWriter: ResponseBodyWriter {
    private(set) var buffers: [ByteBuffer] = []

    func write(_ buffer: ByteBuffer) async throws {
        buffers.append(buffer)
    }

    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
