import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP2
import NIOHTTPTypesHTTP2

/// HTTP/2 on a TLS connection that negotiated `h2`: every stream the client opens gets the same treatment as an
/// HTTP/1.1 connection's first request. A request for an event stream (or a webhook) is run by a `RequestHandoff` on
/// the HTTP/2 stream (an event stream's frames then go out as DATA frames, under that stream's own flow control, see
/// `StreamOutlet`); anything else goes to Hummingbird on the stream's channel. Many event streams share one connection, and a
/// client that resets one stream ends that stream alone.
struct HTTP2Connections: Sendable {
    /// An HTTP/2 stream waiting for its request.
    struct Stream: Sendable {
        let channel: any Channel
        let handoff: NIOLoopBound<RequestHandoff>
        let fate: EventLoopFuture<RequestHandoff.Fate>
    }

    let streams: RequestHandoff.Runner
    let logger: Logger

    /// Puts HTTP/2 on `channel`; the streams its client opens arrive in the returned sequence, which ends with the
    /// connection.
    func configure(_ channel: any Channel) throws -> AsyncStream<Stream> {
        let (opened, continuation) = AsyncStream<Stream>.makeStream()
        channel.closeFuture.whenComplete { _ in continuation.finish() }
        let (runner, logger) = (streams, self.logger)
        try channel.pipeline.syncOperations.addHandler(CloseOnEndOfInput())
        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                let pipeline = stream.pipeline.syncOperations
                let handoff = RequestHandoff(runner: runner, eventLoop: stream.eventLoop, onHTTP2Stream: true)
                try pipeline.addHandler(HTTP2FramePayloadToHTTPServerCodec())
                try pipeline.addHandler(handoff)
                try pipeline.addHandler(HTTPConnectionStateHandler(logger: logger))
                continuation.yield(Stream(channel: stream, handoff: NIOLoopBound(handoff, eventLoop: stream.eventLoop), fate: handoff.fate))
            }
        }
        return opened
    }
}

/// The server allows half-closed connections, so a client that goes away (its FIN) shows up only as the end of
/// input; an HTTP/2 client has nothing more to say then, and its streams would never learn it left. Closing the
/// connection closes every stream on it, which ends their event streams.
private final class CloseOnEndOfInput: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
}
