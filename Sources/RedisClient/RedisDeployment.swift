import Logging
import NIOCore

/// Where a node's Redis is: one server, or a cluster (sharded pub/sub, keys routed by slot).
public enum RedisDeployment: Sendable, Hashable {
    case server(RedisConfiguration)
    case cluster(RedisClusterConfiguration)

    /// `redis://` or `rediss://` for one server, `redis+cluster://` or `rediss+cluster://` for a cluster.
    public init(url: String) throws {
        let lowercased = url.lowercased()
        if lowercased.hasPrefix("redis+cluster://") || lowercased.hasPrefix("rediss+cluster://") {
            self = .cluster(try RedisClusterConfiguration(url: url))
        } else {
            self = .server(try RedisConfiguration(url: url))
        }
    }

    public var isCluster: Bool {
        if case .cluster = self { true } else { false }
    }

    /// TLS settings, for every server of the deployment.
    public var tls: RedisConfiguration.TLS? {
        get {
            switch self {
            case .server(let configuration): configuration.tls
            case .cluster(let cluster): cluster.node.tls
            }
        }
        set {
            switch self {
            case .server(var configuration):
                configuration.tls = newValue
                self = .server(configuration)
            case .cluster(var cluster):
                cluster.node.tls = newValue
                self = .cluster(cluster)
            }
        }
    }

    public var endpointDescription: String {
        switch self {
        case .server(let configuration): configuration.endpointDescription
        case .cluster(let cluster): cluster.endpointDescription
        }
    }
}
