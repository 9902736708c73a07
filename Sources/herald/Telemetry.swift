import Logging
import OTel
import ServiceLifecycle
import Tracing

/// OpenTelemetry traces over OTLP/HTTP, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. The other standard `OTEL_*` variables (protocol, headers,
/// sampler, batch delay, service name) apply as the OpenTelemetry specification defines them. Metrics stay on
/// Prometheus (`/metrics`) and logs on stderr.
enum Telemetry {
    static func isEnabled(_ environment: [String: String]) -> Bool {
        ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].contains { !(environment[$0] ?? "").isEmpty }
    }

    /// Installs the OpenTelemetry tracer process-wide; the returned service exports the spans and must outlive
    /// the application so the last spans are flushed.
    static func bootstrapTracing(environment: [String: String], logger: Logger) throws -> any Service {
        // Only the OTLP/HTTP exporter is built in; swift-otel would stop the process at the first export otherwise.
        for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] where environment[name] == "grpc" {
            throw UnsupportedProtocol(variable: name)
        }
        var configuration = OTel.Configuration.default
        configuration.serviceName = "herald"
        configuration.diagnosticLogger = .custom(logger)
        // Its start-up notes list overrides for metrics and logs too, which stay off here.
        configuration.diagnosticLogLevel = .warning
        configuration.traces.enabled = true
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        let backend = try OTel.makeTracingBackend(configuration: configuration)
        InstrumentationSystem.bootstrap(backend.factory)
        return backend.service
    }

    /// Adds `trace_id` and `span_id` to log lines written inside a span.
    static func loggingMetadataProvider() -> Logger.MetadataProvider {
        OTel.makeLoggingMetadataProvider()
    }

    struct UnsupportedProtocol: Error, CustomStringConvertible {
        let variable: String
        var description: String { "\(variable)=grpc: only http/protobuf and http/json are built in" }
    }
}
