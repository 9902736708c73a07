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
    /// `herald_redis_errors_total{kind}`.
    public static func redis() -> RedisClientObserver {
        let wait = Timer(label: "herald_redis_connect_wait_seconds")
        return RedisClientObserver(
            connectionAwaited: { wait.record(elapsed: $0) },
            commandFailed: { error in
                let kind = switch error {
                case let error as RedisError: error.metricKind
                case is CancellationError: "cancelled"
                default: "connect"
                }
                Counter(label: "herald_redis_errors_total", dimensions: [("kind", kind)]).increment()
            }
        )
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
