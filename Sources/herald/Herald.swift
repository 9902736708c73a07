import ArgumentParser
import DemoAgent
import Foundation
import HeraldCore
import HeraldHTTP
import Logging
import Metrics
import PostgresClient
import Prometheus

@main
struct Herald: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Webhook-driven Server-Sent-Events hub for AI chat applications.",
        subcommands: [Serve.self, Migrate.self, DemoAgentCommand.self],
        defaultSubcommand: Serve.self
    )
}

/// One line on stderr and exit code 2: what start-up could not accept.
private func refuseToStart(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("herald: \(message)\n".utf8))
    return ExitCode(2)
}

private func makeLogger(_ label: String) -> Logger {
    let level = ProcessInfo.processInfo.environment["HERALD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    return Logger(label: label)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the hub (settings from the environment; see docs/operations.md).")

    @Option(help: "Overrides HERALD_HOST.") var host: String?
    @Option(help: "Overrides HERALD_PORT.") var port: Int?

    func run() async throws {
        var configuration: HeraldConfiguration
        do {
            configuration = try HeraldConfiguration.fromEnvironment(ProcessInfo.processInfo.environment)
        } catch {
            throw refuseToStart(error.description)
        }
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        let logger = makeLogger("herald")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let application: any ApplicationProtocolRunner
        do {
            application = try Runner(HeraldApplication.build(configuration: configuration, registry: registry, logger: logger))
        } catch {
            throw refuseToStart("\(error)")
        }
        logger.info("herald starting", metadata: ["address": "\(configuration.host):\(configuration.port)", "agent": "\(configuration.agentKind.rawValue) \(configuration.agentURL)"])
        try await application.run()
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply database migrations (DATABASE_URL).")

    func run() async throws {
        let configuration: HeraldConfiguration
        do {
            configuration = try HeraldConfiguration.fromEnvironment(ProcessInfo.processInfo.environment)
        } catch {
            throw refuseToStart(error.description)
        }
        let logger = makeLogger("herald.migrate")
        let pool = PostgresPool(configuration: .init(connectionString: configuration.databaseURL, poolSize: 1), logger: logger)
        do {
            try await ChatStore(pool: pool).migrate(logger: logger)
            await pool.shutdown()
        } catch {
            await pool.shutdown()
            throw refuseToStart("migration failed: \(error)")
        }
        logger.info("database is up to date")
    }
}

struct DemoAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-agent", abstract: "Run the demo engine (a LangGraph-like agent that echoes)."
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 8090
    @Option(help: "Milliseconds before the first token.") var delayMs = 150
    @Option(help: "Milliseconds between tokens.") var tokenDelayMs = 30

    func run() async throws {
        let logger = makeLogger("herald.demo-agent")
        let options = DemoAgent.Options(
            host: host, port: port, firstTokenDelay: .milliseconds(delayMs), tokenDelay: .milliseconds(tokenDelayMs)
        )
        try await Runner(DemoAgent.application(options: options, logger: logger)).run()
    }
}
