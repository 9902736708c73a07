import Crypto
import Foundation
import HeraldCore
import HTTPTypes
import Hummingbird
import Logging

/// `GET /ws`: the WebSocket handshake (RFC 6455 §4.2). Authenticated like the stream routes (the middleware in
/// front of it); an accepted upgrade takes one of the user's stream slots for the whole socket and is handed to
/// `RequestHandoff`, which answers `101` and puts a `WebSocketSession` on the connection.
struct WebSocketRoute {
    let opener: StreamOpener
    let sender: MessageSender
    let drain: StreamDrain
    let configuration: HeraldConfiguration

    func register(on ws: RouterGroup<HeraldRequestContext>) {
        ws.get(use: upgrade)
    }

    @Sendable func upgrade(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        guard Self.hasToken(request.headers[.upgrade], "websocket"), Self.hasToken(request.headers[.connection], "upgrade") else {
            var error = APIError(.upgradeRequired, "upgrade_required", "this endpoint speaks WebSocket only")
            error.headers[.upgrade] = "websocket"
            throw error
        }
        guard request.headers[.secWebSocketVersion] == "13" else {
            var error = APIError(.upgradeRequired, "unsupported_websocket_version", "only WebSocket version 13 is spoken")
            error.headers[.secWebSocketVersion] = "13"
            throw error
        }
        guard let key = request.headers[.secWebSocketKey], Data(base64Encoded: key)?.count == 16 else {
            throw APIError.badRequest("Sec-WebSocket-Key must be 16 bytes in base64")
        }
        if drain.isDraining { throw APIError.draining }
        guard let handoff = context.handoff else {
            throw APIError.badRequest("a WebSocket upgrade must be the first request of an HTTP/1.1 connection")
        }
        let user = try context.requireUser()
        try checkOrigin(of: request)
        try opener.hub.reserveSlot(opener.quota(of: user))
        handoff.hold(
            webSocket: .init(
                user: user, opener: opener, sender: sender,
                limits: .init(
                    maxThreads: configuration.webSocketMaxThreads, maxMessageBytes: configuration.maxBodyBytes,
                    maxJSONDepth: configuration.maxJSONDepth,
                    pingInterval: .nanoseconds(Int64(configuration.heartbeatSeconds * 1_000_000_000))
                ),
                logger: context.logger
            )
        )
        return Response(
            status: .switchingProtocols,
            headers: [.upgrade: "websocket", .connection: "Upgrade", .secWebSocketAccept: Self.accept(key: key)]
        )
    }

    /// Browsers send cookies with a WebSocket handshake from any site and no CORS check stops the page from reading
    /// the socket: a socket authenticated by the cookie alone must come from this origin or a configured one.
    private func checkOrigin(of request: Request) throws {
        let byCookie = request.headers[.authorization] == nil && request.uri.queryParameters.get("access_token") == nil
        guard byCookie, let origin = request.headers[.origin] else { return }
        let host = request.head.authority ?? request.headers[HTTPField.Name("Host")!]
        let sameOrigin = host.map { origin == "http://\($0)" || origin == "https://\($0)" } ?? false
        guard sameOrigin || configuration.corsOrigins.contains(origin) else {
            throw APIError(.forbidden, "origin_not_allowed", "a cookie-authenticated WebSocket must come from an allowed origin")
        }
    }

    /// `Sec-WebSocket-Accept`: base64 of SHA-1 over the key and the protocol's GUID.
    static func accept(key: String) -> String {
        Data(Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
    }

    /// Whether a comma-separated header holds `token` (case-insensitive).
    private static func hasToken(_ header: String?, _ token: String) -> Bool {
        header?.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == token } ?? false
    }
}
