import Metrics
import PostgresClient
import RedisClient

/// Herald's metric names for what its Redis and PostgreSQL clients report. Labels are small fixed sets.
public enum ClientMetrics {
    /// `herald_postgres_pool_wait_seconds` (waiting for a pooled connection), `herald_postgres_errors_total{kind}`.
    public static func postgresPool() -> PostgresPoolObserver {
        let wait = Timer(label: "herald_postgres_pool_wait_seconds")
        return PostgresPoolObserver(
            leaseAcquired: { wait.record(elapsed: $0) },
            callFailed: { error in
                Counter(label: "herald_postgres_errors_total", dimensions: [("kind", error.metricKind)]).increment()
            }
        )
    }

    /// `herald_redis_connect_wait_seconds` (commands held while the connection is re-established),
    /// `herald_redis_errors_total{kind}`. With `shard` (a cluster master, `host:port`), every figure carries a `shard`
    /// label, and commands and redirects are counted: `herald_redis_commands_total{shard}`,
    /// `herald_redis_redirects_total{shard,kind}` (`moved`, `ask`).
    public static func redis(shard: String? = nil) -> RedisClientObserver {
        let shardLabel = shard.map { [("shard", $0)] } ?? []
        let wait = Timer(label: "herald_redis_connect_wait_seconds", dimensions: shardLabel)
        let commands = shard.map { _ in Counter(label: "herald_redis_commands_total", dimensions: shardLabel) }
        return RedisClientObserver(
            connectionAwaited: { wait.record(elapsed: $0) },
            commandFailed: { error in
                let kind = switch error {
                case let error as RedisError: error.metricKind
                case is CancellationError: "cancelled"
                default: "connect"
                }
                Counter(label: "herald_redis_errors_total", dimensions: [("kind", kind)] + shardLabel).increment()
            },
            commandSent: { commands?.increment() },
            redirected: { kind in
                Counter(label: "herald_redis_redirects_total", dimensions: shardLabel + [("kind", kind.rawValue)]).increment()
            }
        )
    }

    /// A cluster shard's subscriber connection: `herald_redis_subscriber_reconnects_total{shard}`.
    @Sendable public static func redisShardEvent(_ shard: RedisEndpoint, _ event: PubSubEvent) {
        if event == .reconnected {
            Counter(label: "herald_redis_subscriber_reconnects_total", dimensions: [("shard", shard.description)]).increment()
        }
    }
}

extension Timer {
    /// Records a `Duration` (swift-metrics' own overload needs newer Apple platforms than the package declares).
    public func record(elapsed duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// Records the time since `start`.
    public func record(since start: ContinuousClock.Instant) {
        record(elapsed: ContinuousClock.now - start)
    }
}

extension PostgresError {
    var metricKind: String {
        switch kind {
        case .connection: "connection"
        case .server: "server"
        case .cancelled: "cancelled"
        }
    }
}

extension RedisError {
    var metricKind: String {
        switch self {
        case .invalidURL: "invalid_url"
        case .server: "server"
        case .connectionClosed: "connection_closed"
        case .notConnected: "not_connected"
        case .protocolError: "protocol"
        case .tls: "tls"
        case .timeout: "timeout"
        }
    }
}
