import HeraldCore
import Hummingbird
import Metrics
import Prometheus
import RedisClient

/// `/healthz`, `/readyz`, `/metrics`.
struct OperationsRoutes {
    let store: ChatStore
    let redis: RedisClient
    let hub: FanoutHub
    let streamJoins: EngineStreamJoins?
    let registry: PrometheusCollectorRegistry
    /// The identity provider's keys, when tokens from one are accepted.
    let providerKeys: ProviderKeySet?
    let drain: StreamDrain

    struct Health: Encodable {
        let status: String
        var redis: String?
        var postgres: String?
        var subscriber: String?
        /// Present while the node shuts down: it takes no new streams.
        var draining: Bool?
        /// Informational: stale keys still verify, so they do not make the node unready.
        var signingKeys: ProviderKeySet.State?

        enum CodingKeys: String, CodingKey {
            case status, redis, postgres, subscriber, draining
            case signingKeys = "signing_keys"
        }
    }

    func register(on router: Router<HeraldRequestContext>) {
        router.get("healthz") { _, _ in try JSONResponse.make(.ok, Health(status: "ok")) }
        router.get("readyz", use: ready)
        router.get("metrics", use: metrics)
    }

    @Sendable func ready(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        async let redisOK = (try? await redis.send("PING")) != nil
        async let postgresOK = (try? await store.ping()) != nil
        let (redisUp, postgresUp) = await (redisOK, postgresOK)
        let subscriberUp = hub.isSubscriberConnected
        let draining = drain.isDraining
        let health = Health(
            status: redisUp && postgresUp && subscriberUp && !draining ? "ok" : "unavailable",
            redis: redisUp ? "ok" : "unavailable", postgres: postgresUp ? "ok" : "unavailable",
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
