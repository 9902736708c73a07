import HeraldCore
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOTLS

/// Hummingbird's HTTP child channel with Herald's connection limits and stream handoff: each accepted connection
/// is admitted by the `ConnectionGate` (served, limited to the operators' routes, or refused at once); a served
/// HTTP/1.1 connection's pipeline gets the request timeouts, the JSON answers to malformed heads, HTTP/1.0's
/// connection handling and, with `streams`, the `RequestHandoff`, which runs streams and webhooks without a
/// Hummingbird task; Hummingbird's task and async channel are set up only once a connection asks for something
/// else. When streams can open on the event loop, a served connection starts with the `LeanStreamHandler` alone,
/// and gets that pipeline only if its first request is not a stream opened there. With `tls`, every connection
/// speaks TLS first (the refused ones too), and one that negotiates `h2` gets HTTP/2, each stream handled like an
/// HTTP/1.1 connection's first request (`HTTP2Connections`). Herald's public listener (`HTTPListener`) sets a
/// connection up in its accept path and calls `serveWhenNeeded`; the operations listener is Hummingbird's `Server`,
/// which calls `handle` for every connection.
struct LimitedHTTPChannel: ServerChildChannel {
    struct Connection: ServerChildChannelValue {
        enum Start: Sendable {
            /// Answered and closed by `CapacityRefusal`, without HTTP.
            case refused
            case hummingbird(HTTP1Channel.Value)
            /// Waiting for a request that is not the handoff's (streams and webhooks are), which Hummingbird then serves.
            case handoff(NIOLoopBound<RequestHandoff>, EventLoopFuture<RequestHandoff.Fate>)
            /// HTTP/2 over TLS: each stream as it opens, waiting for its request like an HTTP/1.1 connection.
            case http2(AsyncStream<HTTP2Connections.Stream>)
            /// TLS: one of the others once the handshake has settled the protocol.
            case negotiating(EventLoopFuture<Start>)
        }

        let channel: any Channel
        let start: Start
        let admission: ConnectionGate.Admission
    }

    /// The routes a connection in the operators' reserve may use.
    static let operatorPaths: Set<String> = ["/healthz", "/metrics"]

    private let served: HTTP1Channel
    private let operatorsOnly: HTTP1Channel
    let gate: ConnectionGate
    let limits: ConnectionLimits
    private let streams: RequestHandoff.Runner?
    private let tls: ServerTLS?

    init(
        responder: @escaping HTTPChannelHandler.Responder, limits: ConnectionLimits, gate: ConnectionGate,
        streams: RequestHandoff.Runner?, tls: ServerTLS? = nil
    ) {
        self.served = HTTP1Channel(responder: responder)
        self.operatorsOnly = HTTP1Channel(responder: Self.operatorsOnly(responder))
        self.gate = gate
        self.limits = limits
        self.streams = streams
        self.tls = tls
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Connection> {
        let admission = gate.admit()
        let tls = self.tls
        guard admission != .refused else {
            return channel.eventLoop.makeCompletedFuture {
                if let tls { try channel.pipeline.syncOperations.addHandler(tls.handler()) }
                try channel.pipeline.syncOperations.addHandler(CapacityRefusal())
                return Connection(channel: channel, start: .refused, admission: admission)
            }
        }
        let gate = self.gate
        channel.closeFuture.whenComplete { _ in gate.release() }
        guard let tls else {
            return channel.eventLoop.makeCompletedFuture { try configureHTTP1(channel, admission: admission, logger: logger) }
        }
        // TLS first; the rest of the pipeline is the protocol ALPN settles on: HTTP/2 for a served connection that
        // asks for it, HTTP/1.1 otherwise. Known only once the handshake is done, which needs the connection to be
        // read, so `handle` waits for it. A client that never finishes its handshake is closed like one that never
        // finishes its request head.
        let negotiated = channel.eventLoop.makePromise(of: Connection.Start.self)
        let handshakeTimeout = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(limits.headerTimeoutSeconds * 1_000_000_000))) {
            channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in negotiated.fail(ChannelError.ioOnClosedChannel) }
        negotiated.futureResult.whenComplete { _ in handshakeTimeout.cancel() }
        let http2 = admission == .served ? streams.map { HTTP2Connections(streams: $0, logger: logger) } : nil
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(tls.handler())
            try channel.pipeline.syncOperations.addHandler(
                ApplicationProtocolNegotiationHandler { result, channel in
                    negotiated.completeWith(Result {
                        if case .negotiated("h2") = result, let http2 { return .http2(try http2.configure(channel)) }
                        return try configureHTTP1(channel, admission: admission, logger: logger).start
                    })
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
            )
            return Connection(channel: channel, start: .negotiating(negotiated.futureResult), admission: admission)
        }
    }

    /// A connection accepted and admitted by a `StreamLoop` (`PlainStreamListener`) that is not a stream opened
    /// there: the full HTTP/1.1 pipeline at once, or the operators' routes; its slot is given back when it closes.
    func adopt(channel: any Channel, admission: ConnectionGate.Admission, firstHeadDue: NIODeadline, logger: Logger) throws -> Connection {
        let gate = self.gate
        channel.closeFuture.whenComplete { _ in gate.release() }
        return try configureHTTP1(channel, admission: admission, logger: logger, lean: false, firstHeadDue: firstHeadDue)
    }

    /// An HTTP/1.1 connection: the handoff takes its streams (if it may have any), Hummingbird the rest; with `lean`,
    /// the `LeanStreamHandler` first.
    private func configureHTTP1(
        _ channel: any Channel, admission: ConnectionGate.Admission, logger: Logger, lean: Bool = true, firstHeadDue: NIODeadline? = nil
    ) throws -> Connection {
        if admission == .served, let streams {
            let handoff = RequestHandoff(runner: streams, eventLoop: channel.eventLoop)
            if lean, streams.openStreamNow != nil {
                let lean = LeanStreamHandler(runner: streams, handoff: handoff, limits: limits) { channel, firstHeadDue in
                    try configureHTTP(channel, handoff: handoff, logger: logger, firstHeadDue: firstHeadDue)
                }
                try channel.pipeline.syncOperations.addHandler(lean)
            } else {
                try configureHTTP(channel, handoff: handoff, logger: logger, firstHeadDue: firstHeadDue)
            }
            let start = Connection.Start.handoff(NIOLoopBound(handoff, eventLoop: channel.eventLoop), handoff.fate)
            return Connection(channel: channel, start: start, admission: admission)
        }
        try configureHTTP(channel, handoff: nil, logger: logger, firstHeadDue: firstHeadDue)
        return Connection(channel: channel, start: .hummingbird(try Self.asyncChannel(channel)), admission: admission)
    }

    func handle(value: Connection, logger: Logger) async {
        await handle(value.start, of: value, logger: logger)
    }

    /// `handle`, in a task of its own, for a connection that needs it: not one refused, nor one that became a stream
    /// (or only ever had webhooks) before asking Hummingbird for anything. On the connection's event loop.
    func serveWhenNeeded(_ connection: Connection, logger: Logger) {
        switch connection.start {
        case .refused:
            return
        case .handoff(let handoff, let fate):
            fate.whenSuccess { settled in
                guard case .http = settled else { return }
                Task { await serve(connection.channel, unlessTakenBy: handoff, fate, logger: logger) }
            }
        case .hummingbird, .http2, .negotiating:
            Task { await handle(value: connection, logger: logger) }
        }
    }

    private func handle(_ start: Connection.Start, of value: Connection, logger: Logger) async {
        switch start {
        case .negotiating(let negotiated):
            guard let settled = try? await negotiated.get() else { return }
            await handle(settled, of: value, logger: logger)
        case .refused:
            return
        case .hummingbird(let http):
            await (value.admission == .operatorsOnly ? operatorsOnly : served).handle(value: http, logger: logger)
        case .handoff(let handoff, let fate):
            await serve(value.channel, unlessTakenBy: handoff, fate, logger: logger)
        case .http2(let streams):
            // Each HTTP/2 stream is a request of its own: streams the handoff took need nothing here.
            await withDiscardingTaskGroup { group in
                for await stream in streams {
                    group.addTask { await serve(stream.channel, unlessTakenBy: stream.handoff, stream.fate, logger: logger) }
                }
            }
        }
    }

    /// Hands a channel (a connection, or an HTTP/2 stream) to Hummingbird once it asks for something the handoff
    /// does not run.
    private func serve(
        _ channel: any Channel, unlessTakenBy handoff: NIOLoopBound<RequestHandoff>, _ fate: EventLoopFuture<RequestHandoff.Fate>,
        logger: Logger
    ) async {
        guard case .http? = try? await fate.get() else { return }
        let http = try? await channel.eventLoop.submit {
            let http = try Self.asyncChannel(channel)
            handoff.value.passToHummingbird()
            return http
        }.get()
        if let http { await served.handle(value: http, logger: logger) }
    }

    /// The pipeline of Hummingbird's `HTTP1Channel` (its codecs and connection state), with Herald's handlers. The
    /// handoff goes before Hummingbird's connection state: requests it takes are never Hummingbird's.
    private func configureHTTP(_ channel: any Channel, handoff: RequestHandoff?, logger: Logger, firstHeadDue: NIODeadline? = nil) throws {
        let pipeline = channel.pipeline.syncOperations
        let decoding = HTTP1Channel.Configuration().httpDecoder
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = decoding.maxHeaderFieldSize
        decoderLimits.maxHeaderListSize = decoding.maxHeaderListSize
        decoderLimits.maxHeaderFieldCount = decoding.maxHeaderFieldCount
        try pipeline.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: decoderLimits
        )
        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: tls != nil))
        if let handoff { try pipeline.addHandler(handoff) }
        try pipeline.addHandler(HTTPConnectionStateHandler(logger: logger))
        let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        let timeouts = RequestTimeoutHandler(limits: limits, firstHeadDeadline: firstHeadDue)
        try pipeline.addHandlers([MalformedRequestResponder(), timeouts, ConnectionPersistenceHandler()], position: .after(decoder))
        try pipeline.addHandler(RequestStartObserver(reportingTo: timeouts), position: .before(decoder))
    }

    /// Hummingbird's end of the pipeline; on the channel's event loop.
    private static func asyncChannel(_ channel: any Channel) throws -> HTTP1Channel.Value {
        try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
    }

    /// Serves the operators' routes and answers everything else with 503 and `Retry-After`.
    private static func operatorsOnly(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        { request, writer, channel in
            if operatorPaths.contains(request.uri.path) {
                try await responder(request, writer, channel)
                return
            }
            let error = overCapacity
            var headers = error.headers
            headers[.contentType] = "application/json; charset=utf-8"
            try await writer.write(
                response: HTTPResponse(status: error.status, headerFields: headers),
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: error.jsonBody))
            )
        }
    }

    static var overCapacity: APIError {
        var error = APIError(.serviceUnavailable, "over_capacity", "this node is at its connection limit; retry later")
        error.headers[.retryAfter] = "5"
        return error
    }
}

extension HTTPServerBuilder {
    /// The operations listener: the same timeouts, a cap of its own and no reserve; not counted in the metrics
    /// of client connections.
    static func operationsHTTP1(limits: ConnectionLimits) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            let gate = ConnectionGate(maxConnections: ConnectionLimits.operationsMaxConnections, reserve: 0, countsClients: false)
            return LimitedHTTPChannel(responder: responder, limits: limits, gate: gate, streams: nil)
        }
    }
}

/// The whole life of a connection beyond the cap and the operators' reserve: a 503 with `Retry-After`, written as
/// soon as it is accepted, without reading its request, then closed. A client that has already sent its request
/// may see a reset instead; either way it is refused within moments and holds no descriptor.
final class CapacityRefusal: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var hasAnswered = false

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { answer(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        answer(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    /// The whole answer: a 503 with `Retry-After` and the JSON error, the connection closing.
    static let response: [UInt8] = {
        let error = LimitedHTTPChannel.overCapacity
        var head = "HTTP/1.1 \(error.status.code) \(error.status.reasonPhrase)\r\n"
        head += "Content-Type: application/json; charset=utf-8\r\n"
        for field in error.headers { head += "\(field.name.rawName): \(field.value)\r\n" }
        head += "Content-Length: \(error.jsonBody.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + error.jsonBody
    }()

    private func answer(_ context: ChannelHandlerContext) {
        guard !hasAnswered else { return }
        hasAnswered = true
        let buffer = context.channel.allocator.buffer(bytes: Self.response)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
