import Hummingbird

/// Erases an application's concrete type so commands can build it in a `do` block and run it afterwards.
protocol ApplicationProtocolRunner: Sendable {
    func run() async throws
}

struct Runner<Application: ApplicationProtocol>: ApplicationProtocolRunner {
    let application: Application

    init(_ application: Application) {
        self.application = application
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    func run() async throws {
        try await application.runService()
    }
}
