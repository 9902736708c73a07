import ArgumentParser
import DemoAgent
import Foundation
import HeraldCore
import HeraldHTTP
import Logging
import Metrics
import PostgresClient
import Prometheus
import ServiceLifecycle

@main
struct Herald: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Webhook-driven Server-Sent-Events hub for AI chat applications.",
        subcommands: [Serve.self, Migrate.self, DemoAgentCommand.self, Token.self],
        defaultSubcommand: Serve.self
    )
}

/// One line on stderr and exit code 2: what start-up could not accept.
private func refuseToStart(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("herald: \(message)\n".utf8))
    return ExitCode(2)
}

/// Logs on stderr: text, or with `HERALD_LOG_FORMAT=json` one JSON object a line. With tracing on, lines written
/// inside a span carry its `trace_id` and `span_id`.
private func makeLogger(_ label: String) throws -> Logger {
    let environment = ProcessInfo.processInfo.environment
    let level = environment["HERALD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
    let json: Bool
    switch environment["HERALD_LOG_FORMAT"] {
    case nil, "", "text": json = false
    case "json": json = true
    case let other?: throw refuseToStart("HERALD_LOG_FORMAT must be text or json, got \"\(other)\"")
    }
    let metadataProvider = Telemetry.isEnabled(environment) ? Telemetry.loggingMetadataProvider() : nil
    LoggingSystem.bootstrap({ label, metadataProvider in
        if json {
            var handler = JSONLogHandler.standardError(label: label, metadataProvider: metadataProvider)
            handler.logLevel = level
            return handler
        }
        var handler = StreamLogHandler.standardError(label: label, metadataProvider: metadataProvider)
        handler.logLevel = level
        return handler
    }, metadataProvider: metadataProvider)
    return Logger(label: label)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the hub (settings from the environment; see docs/operations.md).")

    @Option(help: "Overrides HERALD_HOST.") var host: String?
    @Option(help: "Overrides HERALD_PORT.") var port: Int?
    @Flag(help: "Local development only: run without HERALD_JWT_SECRET (same as HERALD_INSECURE_DEV=1).")
    var insecureDev = false

    func run() async throws {
        var environment = ProcessInfo.processInfo.environment
        if insecureDev { environment["HERALD_INSECURE_DEV"] = "1" }
        var configuration: HeraldConfiguration
        do {
            configuration = try HeraldConfiguration.fromEnvironment(environment)
        } catch {
            throw refuseToStart(error.description)
        }
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        let logger = try makeLogger("herald")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusNames.factory(registry: registry))
        var telemetry: [any Service] = []
        if Telemetry.isEnabled(environment) {
            do {
                telemetry.append(try Telemetry.bootstrapTracing(environment: environment, logger: logger))
            } catch {
                throw refuseToStart("OpenTelemetry configuration error: \(error)")
            }
        }
        if configuration.jwtSecret == nil, configuration.developmentMode {
            logger.critical(
                """
                INSECURE DEVELOPMENT MODE: user tokens are signed with a published secret; anyone can act as any user. \
                Never run this way outside your own machine.
                """
            )
        }
        let application: any ApplicationProtocolRunner
        do {
            let drain = StreamDrain()
            application = try await Runner(
                HeraldApplication.build(
                    configuration: configuration, registry: registry, logger: logger, drain: drain,
                    tracing: Telemetry.isEnabled(environment)
                ),
                logger: logger, telemetry: telemetry, first: [drain],
                // The drain window, and time for what follows it (in-flight webhooks, closing the clients).
                shutdownLimit: .milliseconds(Int64(configuration.drainSeconds * 1000)) + .seconds(5)
            )
        } catch {
            throw refuseToStart("\(error)")
        }
        logger.info("herald starting", metadata: [
            "address": "\(configuration.host):\(configuration.port)", "agent": "\(configuration.agentKind.rawValue) \(configuration.agentURL)",
            "max_connections": "\(configuration.connectionLimits.maxConnections)",
            "tls": "\(configuration.serverTLS == nil ? "off" : "HTTPS (HTTP/2, HTTP/1.1), certificate reloaded on SIGHUP")",
        ])
        try await application.run()
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply database migrations (DATABASE_URL).")

    func run() async throws {
        let databaseURL: String
        do {
            databaseURL = try HeraldConfiguration.databaseURL(fromEnvironment: ProcessInfo.processInfo.environment)
        } catch {
            throw refuseToStart(error.description)
        }
        let logger = try makeLogger("herald.migrate")
        let pool = PostgresPool(configuration: .init(connectionString: databaseURL, poolSize: 1), logger: logger)
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

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a user token (HS256 JWT) signed with HERALD_JWT_SECRET, for development and scripts."
    )

    @Option(help: "The user id (the token's sub).") var user: String
    @Option(help: "How long the token is valid: 90s, 30m, 1h, 7d.") var ttl = "1h"
    @Flag(help: "Sign with the development secret instead of HERALD_JWT_SECRET.") var insecureDev = false

    func run() async throws {
        guard let seconds = Self.seconds(ttl) else { throw refuseToStart("--ttl must look like 90s, 30m, 1h or 7d, got \"\(ttl)\"") }
        guard !user.isEmpty, user.utf8.count <= 256 else { throw refuseToStart("--user must be 1 to 256 bytes") }
        let environment = ProcessInfo.processInfo.environment
        let secret: String
        if let configured = environment["HERALD_JWT_SECRET"], !configured.isEmpty {
            secret = configured
        } else if insecureDev || environment["HERALD_INSECURE_DEV"] == "1" {
            secret = UserTokens.developmentSecret
        } else {
            throw refuseToStart("HERALD_JWT_SECRET is not set (use --insecure-dev for the development secret)")
        }
        print(try await UserTokens(secret: secret).mint(user: user, validFor: .seconds(seconds)))
    }

    static func seconds(_ text: String) -> Int? {
        guard let unit = text.last, let value = Int(text.dropLast()), value > 0 else { return nil }
        switch unit {
        case "s": return value
        case "m": return value * 60
        case "h": return value * 3600
        case "d": return value * 86400
        default: return nil
        }
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
        let logger = try makeLogger("herald.demo-agent")
        // Signs its callbacks with the first of HERALD_WEBHOOK_SECRET's secrets when set.
        var signer: StandardWebhooks?
        if let secrets = ProcessInfo.processInfo.environment["HERALD_WEBHOOK_SECRET"], !secrets.isEmpty {
            do {
                signer = try StandardWebhooks(secrets: StandardWebhooks.parseSecrets(secrets))
            } catch {
                throw refuseToStart("configuration error: HERALD_WEBHOOK_SECRET must be one or more whsec_<base64> secrets")
            }
        }
        // Callbacks to an HTTPS Herald with a private CA trust it as Herald's own outbound calls do.
        let callbackCA = ProcessInfo.processInfo.environment["HERALD_OUTBOUND_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        let options = DemoAgent.Options(
            host: host, port: port, firstTokenDelay: .milliseconds(delayMs), tokenDelay: .milliseconds(tokenDelayMs), signer: signer,
            callbackCAFile: callbackCA
        )
        try await Runner(DemoAgent.application(options: options, logger: logger), logger: logger).run()
    }
}
