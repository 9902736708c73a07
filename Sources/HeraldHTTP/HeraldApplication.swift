import CurlClient
import Foundation
import HeraldCore
import Hummingbird
import Logging
import PostgresClient
import Prometheus
import RedisClient
import ServiceLifecycle

/// Wires the clients, the hub core and the routes into one Hummingbird application.
public enum HeraldApplication {
    /// `router` receives every public route (tests read its `routes`); `drain` is to be run after the application
    /// in its service group (see `StreamDrain`); `tracing` adds a span per request (OpenTelemetry is on).
    public static func build(
        configuration: HeraldConfiguration, registry: PrometheusCollectorRegistry, logger: Logger,
        router: Router<HeraldRequestContext> = Router(context: HeraldRequestContext.self), drain: StreamDrain = StreamDrain(),
        tracing: Bool = false
    ) async throws -> some ApplicationProtocol {
        var redisConfiguration = try RedisConfiguration(url: configuration.redisURL)
        if redisConfiguration.tls != nil {
            let settings = configuration.redisTLS
            redisConfiguration.tls = .init(
                caFile: settings.caFile, certificateFile: settings.certificateFile, keyFile: settings.keyFile,
                verifiesServer: !settings.insecure
            )
            if settings.insecure {
                logger.critical("REDIS_TLS_INSECURE: Redis's certificate and name are NOT verified; anyone on the path can read and forge every frame")
            }
        }
        let nodeName = "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        let keys = ThreadKeys(prefix: configuration.channelPrefix)

        let redis = RedisClient(
            configuration: redisConfiguration, name: "herald-pub-\(nodeName)", logger: logger, observer: ClientMetrics.redis()
        )
        let pool = PostgresPool(
            configuration: .init(connectionString: configuration.databaseURL, poolSize: configuration.databasePoolSize), logger: logger,
            observer: ClientMetrics.postgresPool()
        )
        let http = try CurlHTTPClient(logger: logger, caFile: configuration.outboundCAFile)
        let store = ChatStore(pool: pool)
        let publisher = FramePublisher(
            redis: redis, keys: keys, logMaxLength: configuration.logMaxLength, logTTLSeconds: configuration.logTTLSeconds
        )
        let replayer = LogReplayer(redis: redis, keys: keys, logMaxLength: configuration.logMaxLength)
        let hub = FanoutHub(
            redis: redisConfiguration, nodeName: nodeName, keys: keys, heartbeatSeconds: configuration.heartbeatSeconds, logger: logger
        )
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
        let chats = router.group("chats").add(middleware: UserAuthenticationMiddleware(tokens: userTokens))
        ChatRoutes(coordinator: coordinator, rateLimiter: rateLimiter, configuration: configuration).register(on: chats)
        drain.drains(hub)
        StreamRoute(store: store, hub: hub, replayer: replayer, drain: drain, configuration: configuration).register(on: chats)
        WebhookRoute(coordinator: coordinator, signatures: signatures, configuration: configuration).register(on: router)
        let operations = OperationsRoutes(
            store: store, redis: redis, hub: hub, streamJoins: coordinator.streamJoins, registry: registry, providerKeys: providerKeys,
            drain: drain
        )
        operations.register(on: router)
        PageRoutes(userTokens: userTokens, configuration: configuration).register(on: router)
        OpenAPIRoute().register(on: router)

        // Shut down in reverse order: the server first (streams end), then these, the clients last.
        var services: [any Service] = [
            ClientsShutdown(redis: redis, pool: pool, http: http),
            hub,
            jobs,
            RunSweeper(coordinator: coordinator, interval: sweepInterval),
        ]
        if let providerKeys { services.append(providerKeys) }
        if let operationsPort = configuration.connectionLimits.operationsPort {
            let operationsRouter = Router(context: HeraldRequestContext.self)
            operationsRouter.addObservability(tracing: tracing)
            operationsRouter.add(middleware: ErrorMiddleware())
            operations.register(on: operationsRouter)
            services.append(
                Application(
                    router: operationsRouter,
                    server: .operationsHTTP1(limits: configuration.connectionLimits),
                    configuration: .init(address: .hostname(configuration.host, port: operationsPort), serverName: "herald"),
                    logger: logger
                )
            )
        }
        return Application(
            router: router,
            server: .limitedHTTP1(
                limits: configuration.connectionLimits, streams: .init(responder: router.buildResponder(), logger: logger)
            ),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "herald"),
            services: services,
            logger: logger
        )
    }
}

/// Closes the shared clients once everything that uses them has stopped.
struct ClientsShutdown: Service {
    let redis: RedisClient
    let pool: PostgresPool
    let http: CurlHTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        http.shutdown()
        await redis.close()
        await pool.shutdown()
    }
}
