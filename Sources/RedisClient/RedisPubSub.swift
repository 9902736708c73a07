/// What a pub/sub subscriber tells its owner about the channels it holds.
public enum PubSubEvent: Sendable, Hashable {
    /// The first connection is up and every wanted channel is subscribed.
    case connected
    /// The connection dropped: messages of every channel may be missed until `.reconnected` (reported only after
    /// `.connected`/`.reconnected`).
    case disconnected
    /// Connected again after a drop, after all wanted channels were re-subscribed.
    case reconnected
    /// Messages of these channels may be missed from now until `.restored` names them: their shard is
    /// unreachable, or Redis moved their slot to another shard.
    case interrupted(Set<String>)
    /// These channels are subscribed again (on their current shard).
    case restored(Set<String>)
}

/// A node's subscriptions, on one server (`RedisSubscriber`) or across a cluster's shards
/// (`RedisClusterSubscriber`). Messages and events arrive through the callbacks given at creation.
public protocol RedisPubSub: Sendable {
    /// Runs until the task is cancelled or `shutdown()` is called.
    func run() async throws
    /// Subscribes to `channel` and returns once Redis has confirmed it; the channel stays wanted (and is
    /// subscribed again after reconnects) until `unsubscribe`.
    func subscribe(_ channel: String, timeout: Duration) async throws
    /// No message of `channel` is delivered after this returns.
    func unsubscribe(_ channel: String) async throws
    func shutdown()
    /// True while every connection the subscriber needs is up with its channels subscribed.
    var isConnected: Bool { get }
}
