import CurlClient
import Foundation
import HeraldCore
import Hummingbird
import Logging
import PostgresClient
import RedisClient

/// Turns whatever a handler throws into the JSON error contract: client mistakes get their 4xx, unavailable
/// dependencies 503 (so engines retry), and only Herald's own bugs a 500, logged.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            throw Self.apiError(for: error, logger: context.logger)
        }
    }

    static func apiError(for error: any Error, logger: Logger) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as NotFound:
            return .notFound(error.what)
        case let error as WebhookDecodingError:
            switch error {
            case .malformed(let message): return .badRequest(message)
            case .invalid(let message): return .invalid(message)
            }
        case let error as FanoutHub.TooManyStreams:
            var tooMany = APIError(.tooManyRequests, "too_many_streams", "at most \(error.limit) open streams per user")
            tooMany.headers[.retryAfter] = "5"
            return tooMany
        case let error as DependencyUnavailable:
            logger.warning("dependency unavailable", metadata: ["error": "\(error)"])
            return .unavailable(error.dependency)
        case let error as PostgresError where error.isConnectionError:
            logger.warning("postgres unavailable", metadata: ["error": "\(error)"])
            return .unavailable("postgres")
        case let error as PostgresError where error.sqlState?.hasPrefix("22") == true:
            // A value PostgreSQL cannot take (data exception): the input's fault, refused before anything is stored.
            return .invalid("a value was not acceptable: \(error.sqlState ?? "")")
        case is RedisError:
            logger.warning("redis unavailable", metadata: ["error": "\(error)"])
            return .unavailable("redis")
        case let error as HTTPError:
            return APIError(error.status, code(for: error.status), error.body ?? error.status.reasonPhrase)
        default:
            logger.error("unhandled error", metadata: ["error": "\(String(reflecting: error))"])
            return APIError(.internalServerError, "internal_error", "internal error")
        }
    }

    private static func code(for status: HTTPResponse.Status) -> String {
        switch status {
        case .notFound: "not_found"
        case .methodNotAllowed: "method_not_allowed"
        case .contentTooLarge: "body_too_large"
        case .badRequest: "malformed_request"
        case .unsupportedMediaType: "unsupported_media_type"
        default: status.reasonPhrase.lowercased().replacingOccurrences(of: " ", with: "_")
        }
    }
}
