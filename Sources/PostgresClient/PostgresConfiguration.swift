/// How to reach PostgreSQL and how many connections to keep.
public struct PostgresConfiguration: Sendable {
    /// A libpq connection string: a `postgresql://` URL or `key=value` pairs.
    public var connectionString: String
    /// The most connections the pool opens; also the number of threads it runs blocking libpq calls on.
    public var poolSize: Int
    /// Used as libpq's `connect_timeout` unless the connection string sets one itself. `0` means no timeout.
    public var connectTimeoutSeconds: Int

    public init(connectionString: String, poolSize: Int = 4, connectTimeoutSeconds: Int = 5) {
        self.connectionString = connectionString
        self.poolSize = poolSize
        self.connectTimeoutSeconds = connectTimeoutSeconds
    }
}
