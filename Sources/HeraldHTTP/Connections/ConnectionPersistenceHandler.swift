import NIOCore
import NIOHTTP1

/// Gives an HTTP/1.0 client the answer it can read: Hummingbird answers every request as HTTP/1.1 (chunked when
/// the length is unknown, as for SSE) and keeps the connection open unless an HTTP/1.1 request said `close`.
/// Here a response to HTTP/1.0 goes out as HTTP/1.0, its body delimited by the end of the connection, and a
/// connection whose request did not ask to be kept alive is closed once its response has been written.
final class ConnectionPersistenceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private struct PendingRequest {
        let version: HTTPVersion
        let keepAlive: Bool
    }

    /// Requests read and not yet answered, oldest first (more than one when pipelined).
    private var pending: [PendingRequest] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            pending.append(PendingRequest(version: head.version, keepAlive: head.isKeepAlive))
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where pending.first?.version == .http1_0:
            let request = pending[0]
            head.version = .http1_0
            head.headers.remove(name: "Transfer-Encoding")
            head.headers.replaceOrAdd(name: "Connection", value: request.keepAlive ? "keep-alive" : "close")
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end where !pending.isEmpty && !pending[0].keepAlive:
            pending.removeFirst()
            let written = promise ?? context.eventLoop.makePromise()
            context.write(data, promise: written)
            written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .end:
            if !pending.isEmpty { pending.removeFirst() }
            context.write(data, promise: promise)
        default:
            context.write(data, promise: promise)
        }
    }
}
