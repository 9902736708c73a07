import Glibc

/// How long a client connection may take over each part of a request, and how many may be open at once:
/// the defence against clients that hold connections without using them (slowloris). See docs/security.md.
public struct ConnectionLimits: Sendable, Equatable {
    /// From accept, or from the first byte of a later request, until its head is complete.
    public var headerTimeoutSeconds: Double
    /// From a request's head until the end of its body.
    public var bodyTimeoutSeconds: Double
    /// From the end of a response until the first byte of the next request.
    public var idleTimeoutSeconds: Double
    /// Open client connections served in full; `operatorReserve` more may reach `/healthz` and `/metrics` only.
    public var maxConnections: Int
    /// A second listener (on the same host) with `/healthz`, `/readyz` and `/metrics` only, outside the cap.
    public var operationsPort: Int?

    /// Connections beyond `maxConnections` that are still accepted, for operators' `/healthz` and `/metrics`.
    public static let operatorReserve = 8
    /// Connections the operations listener serves at once: probes and scrapers, not clients.
    public static let operationsMaxConnections = 64

    public init(
        headerTimeoutSeconds: Double = 10, bodyTimeoutSeconds: Double = 30, idleTimeoutSeconds: Double = 60, maxConnections: Int = 10_000,
        operationsPort: Int? = nil
    ) {
        self.headerTimeoutSeconds = headerTimeoutSeconds
        self.bodyTimeoutSeconds = bodyTimeoutSeconds
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.maxConnections = maxConnections
        self.operationsPort = operationsPort
    }

    /// The default cap: 90 % of the descriptor limit, less the descriptors the node itself needs (its
    /// PostgreSQL pool, one curl connection per joined engine stream, Redis, and a fixed allowance for the
    /// listener, event loops, curl's own handles and deliveries) and the operators' reserve.
    public static func defaultMaxConnections(fileDescriptorLimit: Int, databasePoolSize: Int, agentStreamMaxJoins: Int) -> Int {
        let ownDescriptors = databasePoolSize + agentStreamMaxJoins + 128
        return max(16, fileDescriptorLimit * 9 / 10 - ownDescriptors - operatorReserve)
    }

    /// The soft `RLIMIT_NOFILE` of this process; "unlimited" counts as one million.
    public static func currentFileDescriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return limit.rlim_cur == rlim_t.max ? 1_000_000 : Int(clamping: limit.rlim_cur)
    }

    static func fromEnvironment(
        _ reader: EnvironmentReader, defaultMaxConnections: Int
    ) throws(ConfigurationError) -> ConnectionLimits {
        let defaults = ConnectionLimits()
        var limits = ConnectionLimits(
            headerTimeoutSeconds: try reader.seconds("HERALD_HEADER_TIMEOUT_SECONDS", default: defaults.headerTimeoutSeconds),
            bodyTimeoutSeconds: try reader.seconds("HERALD_BODY_TIMEOUT_SECONDS", default: defaults.bodyTimeoutSeconds),
            idleTimeoutSeconds: try reader.seconds("HERALD_IDLE_TIMEOUT_SECONDS", default: defaults.idleTimeoutSeconds),
            maxConnections: try reader.integer("HERALD_MAX_CONNECTIONS", default: defaultMaxConnections, range: 1...10_000_000)
        )
        if try reader.optionalString("HERALD_OPERATIONS_PORT") != nil {
            limits.operationsPort = try reader.integer("HERALD_OPERATIONS_PORT", default: 0, range: 1...65535)
        }
        return limits
    }
}
