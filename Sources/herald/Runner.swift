import Logging
import ServiceLifecycle
import UnixSignals

/// Erases an application's concrete type so commands can build it in a `do` block and run it afterwards.
protocol ApplicationProtocolRunner: Sendable {
    func run() async throws
}

struct Runner<Application: Service>: ApplicationProtocolRunner {
    let application: Application
    let logger: Logger
    /// Services that must outlive the application (the span exporter flushes after the last request).
    let telemetry: [any Service]
    /// Services shut down before the application (the stream drain).
    let first: [any Service]
    /// The longest a graceful shutdown may take before what is left is cancelled.
    let shutdownLimit: Duration?

    init(
        _ application: Application, logger: Logger, telemetry: [any Service] = [], first: [any Service] = [], shutdownLimit: Duration? = nil
    ) {
        self.application = application
        self.logger = logger
        self.telemetry = telemetry
        self.first = first
        self.shutdownLimit = shutdownLimit
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully: `first`, the application, then `telemetry`.
    func run() async throws {
        var configuration = ServiceGroupConfiguration(
            services: telemetry + [application] + first, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger
        )
        configuration.maximumGracefulShutdownDuration = shutdownLimit
        try await ServiceGroup(configuration: configuration).run()
    }
}
