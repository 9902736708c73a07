import Prometheus

/// The Prometheus factory `herald serve` records into: Hummingbird's `MetricsMiddleware` names (OpenTelemetry
/// style, with dots) become Prometheus names under `herald_http_`, and the histograms get buckets that fit what
/// they time.
public enum PrometheusNames {
    /// Hummingbird's metric labels → Herald's names.
    static let metricNames = [
        "hb.requests": "herald_http_requests_total",
        "hb.request.errors": "herald_http_request_errors_total",
        "http.server.request.duration": "herald_http_request_duration_seconds",
        "http.server.active_requests": "herald_http_active_requests",
    ]

    /// Hummingbird's dimension names → label names. `http.route` is the route pattern (`/chats/{thread_id}`),
    /// `NotFound` for a path no route matches: never a raw path, so the label set stays small.
    static let labelNames = [
        "http.route": "route",
        "http.request.method": "method",
        "http.response.status_code": "status",
        "error.type": "status",
    ]

    /// Fast operations (publish, webhook, pool waits): 0.5 ms to 10 s.
    static let defaultBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .microseconds(2_500_000),
        .seconds(5), .seconds(10),
    ]

    /// The engine trigger includes retries with backoff: 10 ms to a minute.
    static let triggerBuckets: [Duration] = [
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    public static func factory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.nameAndLabelSanitizer = { name, dimensions in
            (
                metricNames[name] ?? name.replacingDots(),
                dimensions.map { (labelNames[$0.0] ?? $0.0.replacingDots(), $0.1) }
            )
        }
        factory.defaultDurationHistogramBuckets = defaultBuckets
        factory.durationHistogramBuckets = ["herald_agent_trigger_duration_seconds": triggerBuckets]
        return factory
    }
}

extension String {
    /// Herald's own names have no dots: those are returned as they are, without building a new string.
    fileprivate func replacingDots() -> String {
        guard utf8.contains(UInt8(ascii: ".")) else { return self }
        return String(map { $0 == "." ? "_" : $0 })
    }
}
