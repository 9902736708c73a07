import NIOCore

/// What Herald asks of Redis for commands and scripts, whether one server (`RedisClient`) or a cluster
/// (`RedisClusterClient`) answers.
public protocol RedisCommands: Sendable {
    /// Sends one command about `key`: a cluster sends it to the shard owning the key's slot (nil: any shard).
    /// An error reply throws `RedisError.server(message)`.
    func send(_ arguments: [RedisArgument], key: String?) async throws -> RESPValue
    /// Runs a script on the shard owning its keys (which must share a slot in a cluster): EVALSHA, then EVAL when
    /// the script is not loaded there.
    func eval(_ script: RedisScript, keys: [String], arguments: [RedisArgument]) async throws -> RESPValue
    /// `eval` without suspending, for a caller on an event loop: EVALSHA sent at once on a connection that is up, its
    /// reply (an error reply as a failure) as a future; nil when no connection is up. It neither loads the script nor
    /// follows a cluster's redirects: whatever fails, the caller may take the `eval` way, which does.
    func evalNow(_ script: RedisScript, keys: [String], arguments: [RedisArgument]) -> EventLoopFuture<RESPValue>?
    /// PINGs every server in use (every master of a cluster).
    func ping() async -> RedisHealth
    func close() async
}

/// What `RedisCommands.ping()` found.
public struct RedisHealth: Sendable, Equatable {
    /// Each server (`host:port`) and whether it answered.
    public var servers: [String: Bool]
    /// On a cluster: whether the layout has a master for every slot.
    public var allSlotsServed: Bool

    public init(servers: [String: Bool], allSlotsServed: Bool = true) {
        self.servers = servers
        self.allSlotsServed = allSlotsServed
    }

    public var isHealthy: Bool { allSlotsServed && !servers.isEmpty && servers.values.allSatisfy { $0 } }
}
