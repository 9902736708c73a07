import HeraldCore
import Hummingbird
import Metrics
import Prometheus
import RedisClient

/// `/healthz`, `/readyz`, `/metrics`.
struct OperationsRoutes {
    let store: ChatStore
    let redis: any RedisCommands
    let hub: FanoutHub
    let streamJoins: EngineStreamJoins?
    let registry: PrometheusCollectorRegistry
    /// The identity provider's keys, when tokens from one are accepted.
    let providerKeys: ProviderKeySet?
    let drain: StreamDrain

    struct Health: Encodable {
        let status: String
        var redis: String?
        /// On a Redis Cluster: each master, `ok` or `unavailable`.
        var redisShards: [String: String]?
        var postgres: String?
        var subscriber: String?
        /// Present while the node shuts down: it takes no new streams.
        var draining: Bool?
        /// Informational: stale keys still verify, so they do not make the node unready.
        var signingKeys: ProviderKeySet.State?

        enum CodingKeys: String, CodingKey {
            case status, redis, postgres, subscriber, draining
            case redisShards = "redis_shards"
            case signingKeys = "signing_keys"
        }
    }

    func register(on router: Router<HeraldRequestContext>) {
        router.get("healthz") { _, _ in try JSONResponse.make(.ok, Health(status: "ok")) }
        router.get("readyz", use: ready)
        router.get("metrics", use: metrics)
    }

    @Sendable func ready(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        async let redisHealth = redis.ping()
        async let postgresOK = (try? await store.ping()) != nil
        let (redisState, postgresUp) = await (redisHealth, postgresOK)
        let redisUp = redisState.isHealthy
        let subscriberUp = hub.isSubscriberConnected
        let draining = drain.isDraining
        let health = Health(
            status: redisUp && postgresUp && subscriberUp && !draining ? "ok" : "unavailable",
            redis: redisUp ? "ok" : "unavailable",
            redisShards: hub.keys.sharded ? redisState.servers.mapValues { $0 ? "ok" : "unavailable" } : nil,
            postgres: postgresUp ? "ok" : "unavailable",
            subscriber: subscriberUp ? "ok" : "reconnecting", draining: draining ? true : nil, signingKeys: await providerKeys?.state
        )
        return try JSONResponse.make(health.status == "ok" ? .ok : .serviceUnavailable, health)
    }

    @Sendable func metrics(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        // Point-in-time values, read when scraped.
        Gauge(label: "herald_sse_connections").record(hub.connectionCount)
        Gauge(label: "herald_subscribed_threads").record(hub.channelCount)
        Gauge(label: "herald_stream_queued_frames").record(hub.queuedFrames)
        Gauge(label: "herald_redis_subscriber_up").record(hub.isSubscriberConnected ? 1 : 0)
        Gauge(label: "herald_agent_stream_joins_active").record(streamJoins?.activeCount ?? 0)
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer()))
        )
    }
}
