import HeraldCore
import Logging
import RedisClient

/// The node's Redis clients for its deployment: the command client, and the hub's subscriber. On a cluster both
/// follow one shared layout, and their reports name the shard.
struct RedisConnections {
    let commands: any RedisCommands
    let subscriber: (FanoutHub.SubscriberCallbacks) -> any RedisPubSub

    init(deployment: RedisDeployment, nodeName: String, logger: Logger) {
        switch deployment {
        case .server(let configuration):
            commands = RedisClient(configuration: configuration, name: "herald-pub-\(nodeName)", logger: logger, observer: ClientMetrics.redis())
            subscriber = { callbacks in
                RedisSubscriber(
                    configuration: configuration, name: "herald-sub-\(nodeName)", logger: logger, onMessage: callbacks.onMessage,
                    onEvent: callbacks.onEvent
                )
            }
        case .cluster(let cluster):
            let topology = ClusterTopology(configuration: cluster, logger: logger)
            commands = RedisClusterClient(
                configuration: cluster, topology: topology, name: "herald-pub-\(nodeName)", logger: logger,
                observer: { ClientMetrics.redis(shard: $0.description) }
            )
            subscriber = { callbacks in
                RedisClusterSubscriber(
                    configuration: cluster, topology: topology, name: "herald-sub-\(nodeName)", logger: logger,
                    onMessage: callbacks.onMessage, onEvent: callbacks.onEvent, onShardEvent: ClientMetrics.redisShardEvent
                )
            }
        }
    }
}
