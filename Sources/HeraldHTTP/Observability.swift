import HeraldCore
import HTTPTypes
import Hummingbird
import Logging
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

/// What the router's middleware records of a request, for requests answered without the router: its count and
/// duration under the names Hummingbird's `MetricsMiddleware` gives them (`herald_http_requests_total`,
/// `herald_http_request_duration_seconds`), and `RequestLogMiddleware`'s debug line.
struct RouteMetrics: Sendable {
    private let route: String
    private let method: HTTPRequest.Method
    private let status: HTTPResponse.Status
    private let counter: Counter
    private let timer: Metrics.Timer

    init(route: String, method: HTTPRequest.Method, status: HTTPResponse.Status) {
        self.route = route
        self.method = method
        self.status = status
        let dimensions = [
            ("http.route", route), ("http.request.method", method.rawValue), ("http.response.status_code", String(status.code)),
        ]
        counter = Counter(label: "hb.requests", dimensions: dimensions)
        timer = Metrics.Timer(label: "http.server.request.duration", dimensions: dimensions)
    }

    /// A request of this route, begun at `start`, answered.
    func record(since start: ContinuousClock.Instant, logger: Logger) {
        counter.increment()
        timer.record(since: start)
        RequestLogMiddleware<HeraldRequestContext>.log(method: method, route: route, status: Int(status.code), start: start, logger: logger)
    }
}
