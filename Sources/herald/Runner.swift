import Hummingbird
import ServiceLifecycle
import UnixSignals

/// Erases an application's concrete type so commands can build it in a `do` block and run it afterwards.
protocol ApplicationProtocolRunner: Sendable {
    func run() async throws
}

struct Runner<Application: ApplicationProtocol>: ApplicationProtocolRunner {
    let application: Application
    /// Services that must outlive the application (the span exporter flushes after the last request).
    let telemetry: [any Service]

    init(_ application: Application, telemetry: [any Service] = []) {
        self.application = application
        self.telemetry = telemetry
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully: the application first, then `telemetry`.
    func run() async throws {
        let group = ServiceGroup(
            configuration: .init(services: telemetry + [application], gracefulShutdownSignals: [.sigterm, .sigint], logger: application.logger)
        )
        try await group.run()
    }
}
