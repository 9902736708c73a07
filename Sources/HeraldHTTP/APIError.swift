import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Every error leaves as `{"error": {"code", "message"}}` with its status.
public struct APIError: Error, HTTPResponseError {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: jsonBody)))
    }

    var jsonBody: [UInt8] {
        struct Envelope: Encodable {
            struct Detail: Encodable {
                let code: String
                let message: String
            }
            let error: Detail
        }
        return (try? JSONResponse.encoder.encode(Envelope(error: .init(code: code, message: message)))).map(Array.init) ?? []
    }

    static func badRequest(_ message: String) -> APIError { APIError(.badRequest, "malformed_request", message) }
    static func invalid(_ message: String) -> APIError { APIError(.unprocessableContent, "invalid_request", message) }
    /// No credentials: RFC 6750 §3.1 says the challenge then carries no error code.
    static func unauthorized(_ message: String) -> APIError {
        var error = APIError(.unauthorized, "unauthorized", message)
        error.headers[.wwwAuthenticate] = "Bearer"
        return error
    }
    /// A token that was refused (RFC 6750 §3.1 `invalid_token`); `description` never holds quotes or backslashes.
    static func invalidToken(_ description: String) -> APIError {
        var error = APIError(.unauthorized, "unauthorized", description)
        error.headers[.wwwAuthenticate] = #"Bearer error="invalid_token", error_description="\#(description)""#
        return error
    }
    static func notFound(_ what: String) -> APIError { APIError(.notFound, "not_found", "\(what) not found") }
    /// A new stream on a node that is shutting down: the client reconnects (through the load balancer) elsewhere.
    static var draining: APIError {
        var error = APIError(.serviceUnavailable, "draining", "this node is shutting down; reconnect to another")
        error.headers[.retryAfter] = "1"
        return error
    }
    static func unavailable(_ dependency: String) -> APIError {
        APIError(.serviceUnavailable, "dependency_unavailable", "\(dependency) is unavailable; retry later")
    }
}
