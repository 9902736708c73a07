import HTTPTypes
import Hummingbird

/// CORS for the configured exact origins only, with credentials; a preflight is answered here. Other
/// origins get no CORS headers at all (the browser then refuses), never a wildcard.
struct CORSPolicy: RouterMiddleware {
    typealias Context = HeraldRequestContext
    let origins: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin] else { return try await next(request, context) }
        let allowed = origins.contains(origin)
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            var response = Response(status: allowed ? .noContent : .forbidden)
            if allowed {
                addHeaders(to: &response.headers, origin: origin)
                response.headers[.accessControlAllowMethods] = "GET, POST, DELETE, OPTIONS"
                response.headers[.accessControlAllowHeaders] = "Authorization, Content-Type, Last-Event-ID"
                response.headers[.accessControlMaxAge] = "600"
            }
            return response
        }
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            response = try error.response(from: request, context: context)
        }
        if allowed { addHeaders(to: &response.headers, origin: origin) }
        return response
    }

    private func addHeaders(to headers: inout HTTPFields, origin: String) {
        headers[.accessControlAllowOrigin] = origin
        headers[.accessControlAllowCredentials] = "true"
        headers[.vary] = "Origin"
    }
}
