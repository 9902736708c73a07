import HTTPTypes
import NIOCore
import NIOHTTP1

/// Answers a request head the HTTP/1 decoder refused with the JSON error contract instead of Hummingbird's bare,
/// empty 400: an oversized head gets 431, an unknown method 405, anything else (`Content-Length` together with
/// `Transfer-Encoding`, a malformed header) 400. The connection is then half-closed, so nothing sent after the
/// bad head — a smuggled request — is ever read; the client reads the answer and closes.
///
/// Only a head that arrives with no other request in flight is answered here: an error in the middle of a body,
/// or behind a pipelined request still being answered, goes on to Hummingbird, which owns that exchange.
final class MalformedRequestResponder: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var requestsInFlight = 0
    private var isReadingRequest = false
    private var hasAnswered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            isReadingRequest = true
            requestsInFlight += 1
        case .body:
            break
        case .end:
            isReadingRequest = false
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { requestsInFlight -= 1 }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError, requestsInFlight == 0, !isReadingRequest else {
            context.fireErrorCaught(error)
            return
        }
        // The decoder's complaint about a head cut short by the connection closing: nobody is left to answer.
        guard !hasAnswered, context.channel.isActive else { return }
        hasAnswered = true
        let apiError = Self.apiError(for: parserError)
        let body = context.channel.allocator.buffer(bytes: apiError.jsonBody)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: apiError.nioStatus, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in
            context.close(mode: .output, promise: nil)
        }
    }

    static func apiError(for error: HTTPParserError) -> APIError {
        switch error {
        case .headerOverflow:
            APIError(.requestHeaderFieldsTooLarge, "request_header_too_large", "the request head is larger than 80 KiB")
        case .invalidMethod:
            APIError(.methodNotAllowed, "method_not_allowed", "unknown HTTP method")
        case .unexpectedContentLength:
            APIError(.badRequest, "malformed_request", "Content-Length and Transfer-Encoding must not both be present")
        default:
            APIError(.badRequest, "malformed_request", "malformed HTTP request: \(error)")
        }
    }
}

extension APIError {
    var nioStatus: HTTPResponseStatus {
        HTTPResponseStatus(statusCode: status.code, reasonPhrase: status.reasonPhrase)
    }
}
