import HTTPTypes
import Hummingbird
import Metrics

extension Router<HeraldRequestContext> {
    /// Requests counted and timed by route pattern and status (`herald_http_*`), with `tracing` a server span per
    /// request (continuing the caller's `traceparent`, from the header or the callback URL's query), a debug log
    /// line per request. First, so every route has them. Without tracing there is no span middleware at all: even
    /// with no tracer, it costs every request a few percent.
    func addObservability(tracing: Bool) {
        add(middleware: MetricsMiddleware())
        add(middleware: ErrorResponseMiddleware())
        if tracing {
            add(middleware: TraceparentFromQueryMiddleware())
            // Tokens in query strings (EventSource's `access_token`, the engine's callback `token`) stay out of traces.
            add(middleware: TracingMiddleware(redactingQueryParameters: ["access_token", "token"]))
        }
        add(middleware: RequestLogMiddleware())
    }
}

/// Errors become their responses here, just inside `MetricsMiddleware`, which then times a refused request like
/// any other: it only counts errors that reach it thrown.
struct ErrorResponseMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            return try error.response(from: request, context: context)
        }
    }
}

/// A route's request count and duration under the names Hummingbird's `MetricsMiddleware` gives them
/// (`herald_http_requests_total`, `herald_http_request_duration_seconds`), for requests answered without the router.
struct RouteMetrics: Sendable {
    let counter: Counter
    let timer: Metrics.Timer

    init(route: String, method: HTTPRequest.Method, status: HTTPResponse.Status) {
        let dimensions = [
            ("http.route", route), ("http.request.method", method.rawValue), ("http.response.status_code", String(status.code)),
        ]
        counter = Counter(label: "hb.requests", dimensions: dimensions)
        timer = Metrics.Timer(label: "http.server.request.duration", dimensions: dimensions)
    }
}
