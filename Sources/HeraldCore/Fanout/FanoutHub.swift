import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RedisClient
import ServiceLifecycle

/// The node's fan-out: ONE Redis subscriber connection, a channel subscribed while at least one local client
/// watches its thread, and every frame that arrives written as the same buffer to each of those clients.
public final class FanoutHub: Service, Sendable {
    private struct Registry {
        var connections: [String: [UInt64: StreamConnection]] = [:]
        /// Connections whose subscription `acquire` succeeded: each holds one reference of its channel.
        var holdingReference: Set<UInt64> = []
        var perUser: [String: Int] = [:]
        /// Owners of threads with local clients, by channel: while a thread has one, this node is subscribed to
        /// it and sees its `thread_deleted`, so the owner can be trusted without asking PostgreSQL.
        var owners: [String: String] = [:]
        var nextID: UInt64 = 0
        var count = 0
    }

    /// The user already holds as many streams on this node as allowed.
    public struct TooManyStreams: Error {
        public let limit: Int
    }

    public let keys: ThreadKeys
    private let subscriber: RedisSubscriber
    private let subscriptions: ChannelSubscriptions
    private let registry = NIOLockedValueBox(Registry())
    private let logger: Logger

    public init(redis: RedisConfiguration, nodeName: String, keys: ThreadKeys, logger: Logger) {
        self.keys = keys
        self.logger = logger
        let registry = self.registry
        let subscriber = RedisSubscriber(
            configuration: redis,
            name: "herald-sub-\(nodeName)",
            logger: logger,
            onMessage: { channel, payload in
                FanoutHub.deliver(payload, on: channel, registry: registry)
            },
            onEvent: { event in
                FanoutHub.handle(event, registry: registry, logger: logger)
            }
        )
        self.subscriber = subscriber
        self.subscriptions = ChannelSubscriptions(subscriber: subscriber)
    }

    /// Registers a client for `thread` and returns once Redis confirmed the channel subscription, so that every
    /// frame published from now on reaches the connection's queue. The connection is registered before the
    /// subscription is confirmed: a frame arriving right after the confirmation is never missed.
    /// `user` may hold at most `maxPerUser` streams on this node; the slot is given back when the connection ends.
    public func open(
        thread: UUID, user: String, maxPerUser: Int, limits: StreamConnection.Limits
    ) async throws -> StreamConnection {
        let channel = keys.channel(thread)
        let id = try registry.withLockedValue { registry throws(TooManyStreams) -> UInt64 in
            guard registry.perUser[user, default: 0] < maxPerUser else { throw TooManyStreams(limit: maxPerUser) }
            registry.perUser[user, default: 0] += 1
            registry.nextID += 1
            return registry.nextID
        }
        let connection = StreamConnection(id: id, thread: thread, limits: limits) { [registry, subscriptions] connection, _ in
            registry.withLockedValue { registry in
                registry.perUser[user, default: 1] -= 1
                if registry.perUser[user] == 0 { registry.perUser[user] = nil }
            }
            if FanoutHub.unregister(connection, channel: channel, registry: registry) {
                Task { await subscriptions.release(channel) }
            }
        }
        registry.withLockedValue { registry in
            registry.connections[channel, default: [:]][id] = connection
            registry.count += 1
        }
        do {
            try await subscriptions.acquire(channel)
        } catch {
            // `acquire` gave its reference back itself.
            _ = FanoutHub.unregister(connection, channel: channel, registry: registry)
            connection.end(.clientGone)
            throw DependencyUnavailable(dependency: "redis", underlying: "subscribe failed: \(error)")
        }
        // From here on the connection owns a reference, given back when it ends; if it ended while subscribing,
        // it is given back now.
        let stillOpen = registry.withLockedValue { registry -> Bool in
            guard registry.connections[channel]?[id] != nil else { return false }
            registry.holdingReference.insert(id)
            return true
        }
        if !stillOpen {
            let subscriptions = self.subscriptions
            Task { await subscriptions.release(channel) }
        }
        return connection
    }

    /// The owner of `thread` if a local client watches it (the owner was checked when that stream opened).
    public func knownOwner(of thread: UUID) -> String? {
        let channel = keys.channel(thread)
        return registry.withLockedValue { $0.owners[channel] }
    }

    /// Records the owner a stream of `connection`'s thread was checked against; kept while the thread has local
    /// clients and forgotten at its `thread_deleted`.
    public func rememberOwner(_ owner: String, of connection: StreamConnection) {
        let channel = keys.channel(connection.thread)
        registry.withLockedValue { registry in
            guard registry.connections[channel]?[connection.id] != nil else { return }
            registry.owners[channel] = owner
        }
    }

    /// Removes `connection` from the registry; true if it held a channel reference, which the caller gives back.
    private static func unregister(_ connection: StreamConnection, channel: String, registry: NIOLockedValueBox<Registry>) -> Bool {
        registry.withLockedValue { registry -> Bool in
            guard registry.connections[channel]?.removeValue(forKey: connection.id) != nil else { return false }
            registry.count -= 1
            if registry.connections[channel]?.isEmpty == true {
                registry.connections[channel] = nil
                registry.owners[channel] = nil
            }
            return registry.holdingReference.remove(connection.id) != nil
        }
    }

    /// Open client connections on this node.
    public var connectionCount: Int { registry.withLockedValue { $0.count } }
    /// Threads with at least one local client, i.e. channels this node wants subscribed.
    public var channelCount: Int { registry.withLockedValue { $0.connections.count } }
    public var isSubscriberConnected: Bool { subscriber.isConnected }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await subscriber.run()
        } onGracefulShutdown: { [self] in
            endAll(.shutdown)
            subscriber.shutdown()
        }
        endAll(.shutdown)
    }

    public func endAll(_ reason: StreamConnection.EndReason) {
        let all = registry.withLockedValue { $0.connections.values.flatMap(\.values) }
        for connection in all {
            connection.end(reason)
        }
    }

    private static func deliver(_ frame: ByteBuffer, on channel: String, registry: NIOLockedValueBox<Registry>) {
        guard let targets = registry.withLockedValue({ $0.connections[channel].map { Array($0.values) } }) else { return }
        for connection in targets {
            connection.push(frame)
        }
        if FrameEncoder.eventName(of: frame) == Substring(StreamEventName.threadDeleted.rawValue) {
            registry.withLockedValue { _ = $0.owners.removeValue(forKey: channel) }
            for connection in targets {
                connection.end(.threadDeleted)
            }
        }
    }

    private static func handle(_ event: RedisSubscriber.Event, registry: NIOLockedValueBox<Registry>, logger: Logger) {
        switch event {
        case .connected, .reconnected:
            logger.info("redis subscriber connected", metadata: ["event": "\(event)"])
            // Every channel is subscribed again: held-back catch-ups may read the log now, and see everything
            // that was published while the connection was down.
            let all = registry.withLockedValue { $0.connections.values.flatMap(\.values) }
            for connection in all {
                connection.subscriberReady()
            }
        case .disconnected:
            // Whatever is published until the subscriptions are back is missed live; each client reads it
            // from the log, once the subscriber is back, before its next live frame.
            logger.warning("redis subscriber disconnected; streams will catch up from the log")
            let all = registry.withLockedValue { $0.connections.values.flatMap(\.values) }
            for connection in all {
                connection.pushCatchUp()
            }
        }
    }
}

/// Reference counts of wanted channels. The first acquire subscribes (and everyone acquiring meanwhile waits
/// for the same confirmation); the last release unsubscribes. Serialized by the actor, so the commands reach
/// the subscriber connection in the order the transitions happened.
actor ChannelSubscriptions {
    private let subscriber: RedisSubscriber
    private var referenceCounts: [String: Int] = [:]
    private var pending: [String: Task<Void, any Error>] = [:]

    init(subscriber: RedisSubscriber) {
        self.subscriber = subscriber
    }

    func acquire(_ channel: String) async throws {
        let previous = referenceCounts[channel, default: 0]
        referenceCounts[channel] = previous + 1
        let confirmation: Task<Void, any Error>
        if let inFlight = pending[channel] {
            confirmation = inFlight
        } else if previous > 0 {
            return
        } else {
            let subscriber = self.subscriber
            confirmation = Task { try await subscriber.subscribe(channel) }
            pending[channel] = confirmation
        }
        do {
            try await confirmation.value
            if pending[channel] == confirmation { pending[channel] = nil }
        } catch {
            if pending[channel] == confirmation { pending[channel] = nil }
            await release(channel)
            throw error
        }
    }

    func release(_ channel: String) async {
        let remaining = referenceCounts[channel, default: 1] - 1
        guard remaining <= 0 else {
            referenceCounts[channel] = remaining
            return
        }
        referenceCounts[channel] = nil
        try? await subscriber.unsubscribe(channel)
    }
}
