import CEpoll
import CurlClient
import Foundation
import HeraldCore
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import PostgresClient
import Prometheus
import RedisClient
import ServiceLifecycle

/// Wires the clients, the hub core, the routes and the listener into one node.
public enum HeraldApplication {
    /// `router` receives every public route (tests read its `routes`); `drain` is to be run after the application
    /// in its service group (see `StreamDrain`); `tracing` adds a span per request (OpenTelemetry is on).
    public static func build(
        configuration: HeraldConfiguration, registry: PrometheusCollectorRegistry, logger: Logger,
        router: Router<HeraldRequestContext> = Router(context: HeraldRequestContext.self), drain: StreamDrain = StreamDrain(),
        tracing: Bool = false
    ) async throws -> HeraldNode {
        var deployment = try RedisDeployment(url: configuration.redisURL)
        if deployment.tls != nil {
            deployment.tls = configuration.redisTLS
            if !configuration.redisTLS.verifiesServer {
                logger.critical("REDIS_TLS_INSECURE: Redis's certificate and name are NOT verified; anyone on the path can read and forge every frame")
            }
        }
        logger.info("redis", metadata: ["endpoint": "\(deployment.endpointDescription)"])
        let nodeName = "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        let keys = ThreadKeys(prefix: configuration.channelPrefix, sharded: deployment.isCluster)
        let connections = RedisConnections(deployment: deployment, nodeName: nodeName, logger: logger)
        let redis = connections.commands
        let pool = PostgresPool(
            configuration: .init(connectionString: configuration.databaseURL, poolSize: configuration.databasePoolSize), logger: logger,
            observer: ClientMetrics.postgresPool()
        )
        let http = try CurlHTTPClient(logger: logger, caFile: configuration.outboundCAFile)
        let store = ChatStore(pool: pool)
        try await checkDatabaseTLS(configuration.databaseURL, store: store)
        let publisher = FramePublisher(
            redis: redis, keys: keys, logMaxLength: configuration.logMaxLength, logTTLSeconds: configuration.logTTLSeconds
        )
        let replayer = LogReplayer(redis: redis, keys: keys, logMaxLength: configuration.logMaxLength)
        let hub = FanoutHub(keys: keys, heartbeatSeconds: configuration.heartbeatSeconds, logger: logger, subscriber: connections.subscriber)
        let jobs = BackgroundJobs()
        let adapter: any AgentAdapter = switch configuration.agentKind {
        case .langgraph:
            LangGraphAdapter(
                baseURL: configuration.agentURL, assistantID: configuration.agentAssistantID, credential: configuration.agentCredential,
                streamsTokens: configuration.agentStream
            )
        case .generic: GenericAdapter(url: configuration.agentURL, credential: configuration.agentCredential)
        }
        let coordinator = RunCoordinator(
            store: store, publisher: publisher, http: http, adapter: adapter, jobs: jobs, configuration: configuration, logger: logger
        )
        let rateLimiter = SendRateLimiter(redis: redis, prefix: configuration.channelPrefix, perMinute: configuration.sendsPerMinute)
        var providerKeys: ProviderKeySet?
        if let settings = configuration.identityProvider {
            let keys = ProviderKeySet(settings: settings, http: http, logger: logger)
            try await keys.loadInitialKeys()
            providerKeys = keys
        }
        let userTokens = await UserTokens(
            secret: configuration.jwtSecret ?? (configuration.developmentMode ? UserTokens.developmentSecret : nil),
            provider: providerKeys, leewaySeconds: configuration.jwtLeewaySeconds
        )
        let signatures = configuration.webhookSecrets.isEmpty ? nil : try StandardWebhooks(secrets: configuration.webhookSecrets)
        let sweepInterval = Duration.milliseconds(Int64(min(1000, max(50, configuration.runTimeoutSeconds * 250))))

        router.addObservability(tracing: tracing)
        router.add(middleware: CORSPolicy(origins: Set(configuration.corsOrigins)))
        router.add(middleware: ErrorMiddleware())
        let authenticated = UserAuthenticationMiddleware(tokens: userTokens)
        let chats = router.group("chats").add(middleware: authenticated)
        let sender = MessageSender(coordinator: coordinator, rateLimiter: rateLimiter, configuration: configuration)
        ChatRoutes(sender: sender, configuration: configuration).register(on: chats)
        drain.drains(hub)
        let opener = StreamOpener(store: store, hub: hub, replayer: replayer, configuration: configuration)
        let streams = StreamRoute(opener: opener, drain: drain, configuration: configuration, tokens: userTokens)
        streams.register(on: chats)
        WebSocketRoute(opener: opener, sender: sender, drain: drain, configuration: configuration)
            .register(on: router.group("ws").add(middleware: authenticated))
        let webhooks = WebhookRoute(coordinator: coordinator, signatures: signatures, configuration: configuration)
        webhooks.register(on: router)
        let operations = OperationsRoutes(
            store: store, redis: redis, hub: hub, streamJoins: coordinator.streamJoins, registry: registry, providerKeys: providerKeys,
            drain: drain
        )
        operations.register(on: router)
        PageRoutes(userTokens: userTokens, configuration: configuration).register(on: router)
        OpenAPIRoute().register(on: router)

        let responder = router.buildResponder()
        var handoff = RequestHandoff.Runner(
            responder: responder, logger: logger, maxBodyBytes: configuration.maxBodyBytes, serverName: Self.serverName
        )
        if !tracing {
            // With tracing, every request gets its span from the router's middleware.
            handoff.answerNow = { request, body, logger in webhooks.answerNow(request, body: body, logger: logger) }
            handoff.openStreamNow = { request, mayWait, eventLoop, logger, attach in
                streams.openNow(request, mayWait: mayWait, on: eventLoop, logger: logger, attach: attach)
            }
        }
        let tls = try configuration.serverTLS.map { try ServerTLS(files: $0) }
        // Shut down in reverse order: the server first (streams end), then these, the clients last.
        var services: [any Service] = [
            ClientsShutdown(redis: redis, pool: pool, http: http),
            hub,
            jobs,
            RunSweeper(coordinator: coordinator, interval: sweepInterval),
        ]
        if let providerKeys { services.append(providerKeys) }
        if let tls { services.append(ServerTLSReload(tls: tls, logger: logger)) }
        if let operationsPort = configuration.connectionLimits.operationsPort {
            let operationsRouter = Router(context: HeraldRequestContext.self)
            operationsRouter.addObservability(tracing: tracing)
            operationsRouter.add(middleware: ErrorMiddleware())
            operations.register(on: operationsRouter)
            services.append(
                Application(
                    router: operationsRouter,
                    server: .operationsHTTP1(limits: configuration.connectionLimits),
                    configuration: .init(address: .hostname(configuration.host, port: operationsPort), serverName: Self.serverName),
                    logger: logger
                )
            )
        }
        let limits = configuration.connectionLimits
        // Room for the connections, the operators' reserve and the node's own descriptors (pools, engine streams,
        // loops) from the start, so that a storm of connections never waits for the table to grow.
        cepoll_grow_descriptor_table(limits.maxConnections + ConnectionLimits.operatorReserve + 512)
        let served = LimitedHTTPChannel(
            responder: ApplicationResponder.make(responder, logger: logger, serverName: Self.serverName, dates: HTTPDateCache()),
            limits: limits, gate: ConnectionGate(maxConnections: limits.maxConnections, reserve: ConnectionLimits.operatorReserve),
            streams: handoff, tls: tls
        )
        let listener: any Service
        if tls == nil, handoff.openStreamNow != nil {
            // Plain HTTP with streams opened on the loop: stream sockets without NIO channels.
            listener = PlainStreamListener(
                connections: served, runner: handoff, host: configuration.host, port: configuration.port,
                loopCount: NIOSingletons.groupLoopCountSuggestion, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger
            )
        } else {
            listener = HTTPListener(
                connections: served, host: configuration.host, port: configuration.port,
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger
            )
        }
        return HeraldNode(services: services + [listener], logger: logger)
    }

    static let serverName = "herald"
}

/// A node: its services, and its listener last, so that a graceful shutdown stops the listener (and so the
/// streams and requests) first and closes the clients last.
public struct HeraldNode: Service {
    let services: [any Service]
    public let logger: Logger

    public func run() async throws {
        try await ServiceGroup(configuration: .init(services: services, logger: logger)).run()
    }
}

/// A `DATABASE_URL` that asks for TLS (`sslmode=require`, `verify-ca`, `verify-full`) is tried once at start-up:
/// a TLS failure (unknown CA, wrong name, a server without TLS) is a mistake in the settings, refused with one line
/// naming them, while a database that is merely down leaves the node starting unready as always.
private func checkDatabaseTLS(_ url: String, store: ChatStore) async throws {
    guard ["sslmode=require", "sslmode=verify-ca", "sslmode=verify-full"].contains(where: url.contains) else { return }
    do {
        try await store.ping()
    } catch let error as PostgresError where error.isConnectionError {
        let message = error.message.lowercased()
        guard message.contains("ssl") || message.contains("certificate") else { return }
        let firstLine = error.message.split(whereSeparator: \.isNewline).first.map(String.init) ?? error.message
        throw DatabaseTLSFailure(reason: firstLine)
    }
}

struct DatabaseTLSFailure: Error, CustomStringConvertible {
    let reason: String
    var description: String { "DATABASE_URL: TLS to PostgreSQL failed: \(reason)" }
}

/// Closes the shared clients once everything that uses them has stopped.
struct ClientsShutdown: Service {
    let redis: any RedisCommands
    let pool: PostgresPool
    let http: CurlHTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        http.shutdown()
        await redis.close()
        await pool.shutdown()
    }
}
