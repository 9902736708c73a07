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

/// Runs the requests that need no Hummingbird connection task: streams (`GET /chats/sse/…`, and the WebSocket
/// upgrade `GET /ws`) and the engine's webhooks (`POST /webhook/chat-response`).
///
/// Hummingbird keeps one task per connection for as long as the connection lives, and a task keeps the stack
/// its deepest call needed (middleware, token verification, the route) until it ends: about 20 KiB that an
/// open stream would hold for nothing, since its frames are written from the event loop. An engine's webhook, one
/// per token, would pay for that task's async channel twice over (the request's parts handed to the task, the
/// response's handed back). So this handler, right after the HTTP codec (before Hummingbird's connection state and
/// async channel), takes such a request before Hummingbird sees it, collects its body on the event loop (up to the
/// body limit), runs it through the same router (middleware, authentication, errors) in a task of its own that
/// ends with the request, and writes the response itself. A stream's response stays open until the stream ends;
/// then the connection closes. After a webhook's response the connection takes its next request (keep-alive, and
/// `ConnectionPersistenceHandler` closes one whose request asked it to).
///
/// A connection whose requests are all taken here never gets a Hummingbird task at all (`fate` tells the child
/// channel); one that asks for something else gets its task and async channel only then, and a request it asks
/// for later is still taken here, as long as no response of Hummingbird's is outstanding (so pipelined responses
/// keep their order). A WebSocket upgrade is taken only while Hummingbird does not serve the connection: the
/// connection then becomes the `WebSocketSession`'s, with no HTTP handler left. Anything else passes through
/// untouched.
final class RequestHandoff: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// What runs a request taken here: the application's router.
    struct Runner: Sendable {
        let responder: RouterResponder<HeraldRequestContext>
        let logger: Logger
        /// The largest request body collected; a larger one is answered (413, by the route) and the connection closed.
        var maxBodyBytes = 1 << 20
        /// The `Server` header of webhook answers, as Hummingbird sends on its own.
        var serverName: String? = nil
        /// Answers a webhook on the event loop when it can (`WebhookRoute.answerNow`): nil, or a failed future, and
        /// the request goes through the router.
        var answerNow: (@Sendable (HTTPRequest, ByteBuffer, Logger) -> EventLoopFuture<(HTTPResponse, ByteBuffer)>?)? = nil
        /// Opens an event stream on the event loop when it can (`StreamRoute.openNow`); when it does not, the request
        /// goes through the router, after waiting for an open of the same thread in flight if the caller may wait
        /// (`LeanStreamHandler` and the stream loops do, once). It opens on the loop given, with the sink the last
        /// argument makes of the stream there.
        var openStreamNow: (
            @Sendable (StreamRequest, _ mayWait: Bool, any EventLoop, Logger, (StreamConnection) throws -> any StreamSink) -> StreamRoute.OpenNow
        )? = nil

        enum Kind {
            case stream
            case webSocket
            case webhook
        }

        private static let webhookWithQuery = WebhookRoute.path + "?"

        /// What a request is to this handler (nil: Hummingbird's); `webSocket`: a WebSocket upgrade may be taken now.
        static func kind(of head: HTTPRequest, webSocket: Bool) -> Kind? {
            guard let path = head.path else { return nil }
            switch head.method {
            case .get:
                if path.hasPrefix(StreamRoute.pathPrefix) { return .stream }
                return webSocket && (path == "/ws" || path.hasPrefix("/ws?")) ? .webSocket : nil
            case .post:
                return path == WebhookRoute.path || path.hasPrefix(webhookWithQuery) ? .webhook : nil
            default:
                return nil
            }
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

    /// Whether the connection needs Hummingbird: known at its first request that is not a webhook.
    enum Fate: Sendable {
        /// It became a stream or a WebSocket here: it needs no Hummingbird task.
        case stream
        /// It asked for something else: that request is held until `passToHummingbird()`.
        case http
        /// It closed before then.
        case closed
    }

    private enum Mode {
        /// Between requests, none of them Hummingbird's so far: the next one decides.
        case awaitingRequest
        /// Parts of the connection's first request for Hummingbird, held while the child channel sets Hummingbird up.
        case holding([HTTPRequestPart])
        case passing
        /// A webhook taken here, its body arriving.
        case collecting(HTTPRequest, ByteBuffer)
        /// A webhook taken here is being answered; what the client sends meanwhile (a pipelined request) waits.
        case answering(waiting: [HTTPRequestPart])
        /// A stream request is being run or streamed here, or a request body was too large: the client has nothing
        /// more to say that will be read.
        case streaming
    }

    private let runner: Runner
    /// Run on an HTTP/2 stream rather than an HTTP/1.1 connection: it cannot become a WebSocket (no extended
    /// CONNECT here), it carries one request, and the end of the client's input is the end of its request, not the
    /// client leaving.
    private let onHTTP2Stream: Bool
    private let fatePromise: EventLoopPromise<Fate>
    private var fateKnown = false
    private var mode = Mode.awaitingRequest
    /// Requests passed to Hummingbird whose response has not ended.
    private var outstanding = 0
    /// Whether Hummingbird serves this connection; if not, the connection closes after a stream request's answer.
    private var hummingbirdServes = false
    private var context: ChannelHandlerContext?
    /// The stream this handler writes the response of, once it has begun.
    private var stream: StreamConnection?
    private var shuttingDown = false
    /// The connection closes once the request being answered here is (its body was too large, or the client's
    /// input ended).
    private var closesAfterAnswer = false

    init(runner: Runner, eventLoop: any EventLoop, onHTTP2Stream: Bool = false) {
        self.runner = runner
        self.onHTTP2Stream = onHTTP2Stream
        self.fatePromise = eventLoop.makePromise()
    }

    var fate: EventLoopFuture<Fate> { fatePromise.futureResult }

    /// Settles the fate, once (`LeanStreamHandler` settles it for a connection it made a stream before this
    /// handler was in the pipeline).
    func fateIs(_ fate: Fate) {
        guard !fateKnown else { return }
        fateKnown = true
        fatePromise.succeed(fate)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        fateIs(.closed)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fateIs(.closed)
        context.fireChannelInactive()
    }

    /// What Hummingbird does for its own requests is done here for the others: an end of input closes the
    /// connection (an SSE client's end of input means it is gone; a webhook being answered is answered first), and
    /// so does the server's shutdown, after ending a stream (`shutdown`) so that its client reconnects elsewhere,
    /// or answering the request being run.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        let closes = if case ChannelEvent.inputClosed = event { !onHTTP2Stream } else { event is ChannelShouldQuiesceEvent }
        let isHummingbirds = switch mode {
        case .awaitingRequest, .collecting, .answering, .streaming: false
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
        }
        switch mode {
        case .answering:
            closesAfterAnswer = true
        case .streaming where event is ChannelShouldQuiesceEvent:
            // A request being run here is answered first; a stream it opens is ended as soon as it has begun.
            break
        default:
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch mode {
        case .streaming:
            return
        case .holding(var parts):
            mode = .streaming  // (so that `parts` is not shared while it grows; the same below)
            parts.append(part)
            mode = .holding(parts)
        case .collecting(let head, var body):
            mode = .streaming
            switch part {
            case .head:
                preconditionFailure("a request head inside a request's body")
            case .body(let buffer):
                if body.readableBytes == 0 {
                    body = buffer
                } else {
                    body.writeImmutableBuffer(buffer)
                }
                if body.readableBytes > runner.maxBodyBytes {
                    tooLarge(head, body: body, context: context)
                } else {
                    mode = .collecting(head, body)
                }
            case .end:
                mode = .answering(waiting: [])
                answer(head, body: body, context: context)
            }
        case .answering(var waiting):
            mode = .streaming
            waiting.append(part)
            mode = .answering(waiting: waiting)
        case .awaitingRequest:
            guard case .head(let head) = part, let kind = Runner.kind(of: head, webSocket: !onHTTP2Stream) else {
                mode = .holding([part])
                fateIs(.http)
                return
            }
            take(head, kind, context: context)
        case .passing:
            if case .head(let head) = part {
                if outstanding == 0, let kind = Runner.kind(of: head, webSocket: false) {
                    take(head, kind, context: context)
                    return
                }
                outstanding += 1
            }
            context.fireChannelRead(data)
        }
    }

    private func take(_ head: HTTPRequest, _ kind: Runner.Kind, context: ChannelHandlerContext) {
        switch kind {
        case .stream, .webSocket:
            mode = .streaming
            fateIs(.stream)
            let openedNow = kind == .stream ? StreamRequest(head).flatMap {
                runner.openStreamNow?($0, false, context.eventLoop, runner.logger, StreamOutlet.attacher(context.channel))
            } : nil
            switch openedNow {
            case .opened(let response, let stream)?:
                startStream(response, stream)
            case .declined(let claim)?:
                run(head, body: ByteBuffer(), context: context, releasingWhenAnswered: claim)
            case .afterOpening?, nil:
                run(head, body: ByteBuffer(), context: context)
            }
        case .webhook:
            // A declared length over the limit is refused by the route before any of the body is read.
            // (A scan: `HTTPFields`' subscript builds an index of the fields for one lookup.)
            if let declared = head.headerFields.first(where: { $0.name == .contentLength }).flatMap({ Int($0.value) }),
               declared > runner.maxBodyBytes {
                tooLarge(head, body: ByteBuffer(), context: context)
            } else {
                mode = .collecting(head, ByteBuffer())
            }
        }
    }

    /// A body over the limit: the route answers 413 without reading the rest, and the connection, whose remaining
    /// bytes are never read, closes after the answer.
    private func tooLarge(_ head: HTTPRequest, body: ByteBuffer, context: ChannelHandlerContext) {
        mode = .streaming
        closesAfterAnswer = true
        run(head, body: body, context: context)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { outstanding -= 1 }
        context.write(data, promise: promise)
    }

    /// Hummingbird's async channel is in place behind this handler: the held request goes to it.
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

    /// A webhook, answered here on the loop if the route can, else (or if that failed) through the router.
    private func answer(_ request: HTTPRequest, body: ByteBuffer, context: ChannelHandlerContext) {
        guard let answered = runner.answerNow?(request, body, runner.logger) else {
            run(request, body: body, context: context)
            return
        }
        answered.hop(to: context.eventLoop).assumeIsolated().whenComplete { result in
            guard let context = self.context else { return }
            switch result {
            case .success(let (head, answer)): self.respond(head, [answer])
            case .failure: self.run(request, body: body, context: context)
            }
        }
    }

    /// Runs a request through the router in a task of its own; `claim`, the thread's opening claimed for a stream
    /// request, is released once the router has answered.
    private func run(
        _ head: HTTPRequest, body: ByteBuffer, context: ChannelHandlerContext, releasingWhenAnswered claim: ThreadOpenings.Claim? = nil
    ) {
        let runner = self.runner
        let channel = context.channel
        let handoff = NIOLoopBound(self, eventLoop: context.eventLoop)
        Task {
            let slot = Slot()
            let requestContext = HeraldRequestContext(source: .init(channel: channel, logger: runner.logger), handoff: slot)
            var response: Response
            do {
                response = try await runner.responder.respond(
                    to: Request(head: head, body: HummingbirdCore.RequestBody(buffer: body)), context: requestContext
                )
            } catch {
                response = Response(status: .internalServerError)
            }
            // Answered: an open the route began has taken the claim over; if none began, the thread's other streams
            // waiting for it ask again.
            claim?.release()
            let head = response.head
            let taken = slot.value
            if taken != nil {
                // The stream's (empty) body is written nowhere, but written: the middleware counts and times a
                // request once its body is out.
                try? await response.body.write(BufferingBodyWriter())
            }
            switch taken {
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
            handoff.value.endStream(reason)
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

    /// The stream ended: the response's end (not to a client that hung up: it would only draw a reset), and the
    /// connection closes.
    private func endStream(_ reason: StreamConnection.EndReason) {
        stream = nil
        guard let context else { return }
        if reason != .clientGone { context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil) }
        context.close(promise: nil)
    }

    /// A response that is not a stream (a webhook's, or a stream request's error): written whole. After a webhook,
    /// the connection takes its next request, unless it is to close; after a stream request, it stays open only if
    /// Hummingbird serves it.
    private func respond(_ head: HTTPResponse, _ body: [ByteBuffer]) {
        guard let context else { return }
        var head = head
        var waiting: [HTTPRequestPart] = []
        let staysOpen: Bool
        if case .answering(let parts) = mode, !closesAfterAnswer, !shuttingDown, !onHTTP2Stream {
            waiting = parts
            staysOpen = true
        } else {
            staysOpen = hummingbirdServes && !shuttingDown && !closesAfterAnswer
        }
        if !staysOpen { head.headerFields[.connection] = "close" }
        if let serverName = runner.serverName { head.headerFields[.server] = serverName }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        for buffer in body {
            context.write(wrapOutboundOut(.body(buffer)), promise: nil)
        }
        guard staysOpen else {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        mode = hummingbirdServes ? .passing : .awaitingRequest
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        for part in waiting {
            channelRead(context: context, data: wrapInboundOut(part))
        }
        if !waiting.isEmpty { context.fireChannelReadComplete() }
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
