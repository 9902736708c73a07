import Hummingbird

/// Every `/chats` route needs a user token: `Authorization: Bearer …`, or, for EventSource (which cannot set
/// headers), the `access_token` query parameter or cookie.
struct UserAuthenticationMiddleware: RouterMiddleware {
    typealias Context = HeraldRequestContext
    let tokens: UserTokens

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let token = Self.token(in: request) else {
            throw APIError.unauthorized("a bearer token is required")
        }
        let user: String
        do {
            user = try await tokens.user(fromToken: token)
        } catch {
            throw APIError.invalidToken(error.description)
        }
        var context = context
        context.user = user
        return try await next(request, context)
    }

    static func token(in request: Request) -> String? {
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return String(parts[1]) }
            return nil
        }
        if let query = request.uri.queryParameters.get("access_token") { return String(query) }
        return request.cookies["access_token"]?.value
    }
}
