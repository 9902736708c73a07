/// A Redis server's address in a cluster.
public struct RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, or `[v6]:port`.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Where and how to reach a Redis Cluster: seed nodes to learn its layout from, and the credentials and TLS
/// settings every node shares.
public struct RedisClusterConfiguration: Sendable, Hashable {
    /// Any reachable one will do; the rest of the cluster is discovered from it.
    public var seeds: [RedisEndpoint]
    /// Credentials and TLS for every node; its host and port are replaced by each node's.
    public var node: RedisConfiguration

    public init(seeds: [RedisEndpoint], node: RedisConfiguration = RedisConfiguration()) {
        self.seeds = seeds
        self.node = node
    }

    /// The settings for one node of the cluster.
    public func configuration(for endpoint: RedisEndpoint) -> RedisConfiguration {
        var configuration = node
        configuration.host = endpoint.host
        configuration.port = endpoint.port
        return configuration
    }

    /// Parses `redis+cluster://[[username]:password@]host:port[,host:port…]`, or `rediss+cluster://…` for TLS. The
    /// user info and TLS apply to every node; a cluster has only database 0.
    public init(url: String) throws {
        let lowercased = url.lowercased()
        let secure = lowercased.hasPrefix("rediss+cluster://")
        guard secure || lowercased.hasPrefix("redis+cluster://") else {
            throw RedisError.invalidURL("a cluster URL must start with redis+cluster:// or rediss+cluster://")
        }
        let rest = url.dropFirst(secure ? 17 : 16)
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let userInfo = authority.lastIndex(of: "@").map { authority[...$0] } ?? ""
        let hosts = authority.dropFirst(userInfo.count)
        var seeds: [RedisEndpoint] = []
        var node: RedisConfiguration?
        for host in hosts.split(separator: ",", omittingEmptySubsequences: false) {
            let parsed = try RedisConfiguration(url: (secure ? "rediss://" : "redis://") + userInfo + host + rest[authorityEnd...])
            guard parsed.database == 0 else {
                throw RedisError.invalidURL("a cluster has only database 0")
            }
            seeds.append(RedisEndpoint(host: parsed.host, port: parsed.port))
            node = parsed
        }
        guard let node, !seeds.isEmpty else {
            throw RedisError.invalidURL("no cluster node given")
        }
        self.init(seeds: seeds, node: node)
    }

    /// Parses a `host:port,host:port` list (`REDIS_CLUSTER_NODES`), for nodes without credentials or TLS.
    public init(nodes: String) throws {
        try self.init(url: "redis+cluster://" + nodes)
    }

    /// The seeds, for logs (no credentials), and how TLS is checked.
    public var endpointDescription: String {
        let scheme = node.tls == nil ? "redis+cluster" : "rediss+cluster"
        return "\(scheme)://" + seeds.map(\.description).joined(separator: ",") + node.tlsDescription
    }
}
