import Hummingbird

extension Router<HeraldRequestContext> {
    /// Requests counted and timed by route pattern and status (`herald_http_*`), a server span per request
    /// (continuing the caller's `traceparent`, from the header or the callback URL's query), a debug log line per
    /// request. First, so every route has them.
    func addObservability() {
        add(middleware: MetricsMiddleware())
        add(middleware: TraceparentFromQueryMiddleware())
        // Tokens in query strings (EventSource's `access_token`, the engine's callback `token`) stay out of traces.
        add(middleware: TracingMiddleware(redactingQueryParameters: ["access_token", "token"]))
        add(middleware: RequestLogMiddleware())
    }
}
