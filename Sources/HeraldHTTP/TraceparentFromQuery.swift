import HTTPTypes
import Hummingbird

/// Engines that send no trace headers still call back the URL Herald gave them, whose query carries the
/// trigger's `traceparent`. Unless the request has the header, the query's value becomes it, so the span
/// `TracingMiddleware` (after this one) starts continues the run's trace.
struct TraceparentFromQueryMiddleware<Context: RequestContext>: RouterMiddleware {
    static var traceparent: HTTPField.Name { HTTPField.Name("traceparent")! }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.headers[Self.traceparent] == nil, let value = request.uri.queryParameters.get("traceparent") else {
            return try await next(request, context)
        }
        // `Request.head` is read-only: a request with the amended head and the same (unread) body.
        var head = request.head
        head.headerFields[Self.traceparent] = String(value)
        return try await next(Request(head: head, body: request.body), context)
    }
}
