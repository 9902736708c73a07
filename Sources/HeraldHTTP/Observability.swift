import Hummingbird

extension Router<HeraldRequestContext> {
    /// Requests counted and timed by route pattern and status (`herald_http_*`), a server span per request
    /// (continuing the caller's `traceparent`), a debug log line per request. First, so every route has them.
    func addObservability() {
        add(middleware: MetricsMiddleware())
        // Tokens in query strings (EventSource's `access_token`, the engine's callback `token`) stay out of traces.
        add(middleware: TracingMiddleware(redactingQueryParameters: ["access_token", "token"]))
        add(middleware: RequestLogMiddleware())
    }
}
