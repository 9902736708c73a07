import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RedisClient
import ServiceLifecycle

/// The node's fan-out: ONE Redis subscriber (one connection, or one per cluster shard), a channel subscribed while
/// at least one local client watches its thread, and every frame that arrives handed once to each event loop with
/// watchers of the thread, which writes the same buffer to each of them (see `LoopFanout`).
public final class FanoutHub: Service, Sendable {
    private struct Registry {
        var connections: [UInt64: StreamConnection] = [:]
        /// For each watched channel, how many of its streams each loop holds.
        var watchers: [String: [ObjectIdentifier: Int]] = [:]
        var loops: [ObjectIdentifier: LoopFanout] = [:]
        /// Connections that hold a reference of their channel's subscription, taken from `ChannelSubscriptions`
        /// (`acquire` succeeded) or shared (below).
        var holdingReference: Set<UInt64> = []
        /// For each channel, the references taken from `ChannelSubscriptions`, confirmed and not given back.
        var confirmedReferences: [String: Int] = [:]
        /// For each channel, references taken while a confirmed one was held, without asking `ChannelSubscriptions`
        /// (an actor hop per open): given back first, so the confirmed ones, and the subscription, outlive them.
        var sharedReferences: [String: Int] = [:]
        var perUser: [String: Int] = [:]
        /// Owners of threads with local clients, by channel: while a thread has one, this node is subscribed to
        /// it and sees its `thread_deleted`, so the owner can be trusted without asking PostgreSQL.
        var owners: [String: String] = [:]
        /// For watched channels, the newest id in the thread's log as this node knows it: the last frame it
        /// received, or the log's newest id read after subscribing. A stream opened now starts from there, without
        /// asking Redis. Forgotten when the subscriber connection drops (frames may be missed until it is back).
        var logPositions: [String: StreamID] = [:]
        var subscriberUp = false
        /// The subscriber was up and dropped: every channel may miss frames until it is back.
        var subscriberDown = false
        /// Channels that may miss frames until their subscription is back (a cluster shard is unreachable, or
        /// their slot moved).
        var interrupted: Set<String> = []
        var nextID: UInt64 = 0

        /// Whether frames of `channel` published now may not arrive live: a stream opening now must catch up from
        /// the log once the subscription is back.
        func missesFrames(of channel: String) -> Bool {
            subscriberDown || (!interrupted.isEmpty && interrupted.contains(channel))
        }

        /// Whether a frame received on `channel` is the log's newest one as far as anyone can tell.
        func tracksPosition(of channel: String) -> Bool {
            subscriberUp && (interrupted.isEmpty || !interrupted.contains(channel))
        }

        mutating func loop(_ eventLoop: any EventLoop, heartbeatInterval: TimeAmount) -> LoopFanout {
            if let existing = loops[ObjectIdentifier(eventLoop)] { return existing }
            let fanout = LoopFanout(loop: eventLoop, heartbeatInterval: heartbeatInterval)
            loops[ObjectIdentifier(eventLoop)] = fanout
            return fanout
        }
    }

    /// The user already holds as many streams on this node as allowed.
    public struct TooManyStreams: Error {
        public let limit: Int
    }

    /// Where the hub's subscriber hands what it receives.
    public struct SubscriberCallbacks: Sendable {
        public let onMessage: @Sendable (_ channel: String, _ payload: ByteBuffer) -> Void
        public let onEvent: @Sendable (PubSubEvent) -> Void
    }

    public let keys: ThreadKeys
    private let subscriber: any RedisPubSub
    private let subscriptions: ChannelSubscriptions
    private let registry = NIOLockedValueBox(Registry())
    private let heartbeatInterval: TimeAmount
    private let logger: Logger

    /// `subscriber` makes the node's subscriber (one server's or a cluster's) with the hub's callbacks.
    public init(
        keys: ThreadKeys, heartbeatSeconds: Double, logger: Logger, subscriber: (SubscriberCallbacks) -> any RedisPubSub
    ) {
        self.keys = keys
        self.logger = logger
        self.heartbeatInterval = .nanoseconds(Int64(heartbeatSeconds * 1_000_000_000))
        let registry = self.registry
        let subscriber = subscriber(
            SubscriberCallbacks(
                onMessage: { channel, payload in
                    FanoutHub.deliver(payload, on: channel, registry: registry)
                },
                onEvent: { event in
                    FanoutHub.handle(event, registry: registry, logger: logger)
                }
            )
        )
        self.subscriber = subscriber
        self.subscriptions = ChannelSubscriptions(subscriber: subscriber)
    }

    /// How many streams one user may hold on this node.
    public struct UserQuota: Sendable {
        public let user: String
        public let limit: Int

        public init(user: String, limit: Int) {
            self.user = user
            self.limit = limit
        }
    }

    /// Takes one of `quota.user`'s stream slots, for a connection that holds several threads' streams under one
    /// slot (a WebSocket): its streams open with no quota of their own. Given back with `releaseSlot(of:)`.
    public func reserveSlot(_ quota: UserQuota) throws(TooManyStreams) {
        let admitted = registry.withLockedValue { registry -> Bool in
            guard registry.perUser[quota.user, default: 0] < quota.limit else { return false }
            registry.perUser[quota.user, default: 0] += 1
            return true
        }
        guard admitted else { throw TooManyStreams(limit: quota.limit) }
    }

    public func releaseSlot(of user: String) {
        registry.withLockedValue { Self.release(user, in: &$0) }
    }

    private static func release(_ user: String, in registry: inout Registry) {
        registry.perUser[user, default: 1] -= 1
        if registry.perUser[user] == 0 { registry.perUser[user] = nil }
    }

    /// Registers a client of `thread` whose channel `eventLoop` owns, and returns once Redis confirmed the
    /// channel subscription, so that every frame published from now on reaches the stream. The stream is
    /// registered before the subscription is confirmed: a frame arriving right after the confirmation is never
    /// missed. With a `quota`, the stream takes one of the user's slots (`TooManyStreams` when none is left) and
    /// gives it back when it ends; without, its connection holds a slot already (`reserveSlot`).
    public func open(
        thread: UUID, quota: UserQuota?, limits: StreamConnection.Limits, eventLoop: any EventLoop
    ) async throws -> (connection: StreamConnection, logPosition: StreamID?) {
        let channel = keys.channel(thread)
        guard let (connection, position, shared) = try register(
            thread: thread, quota: quota, limits: limits, eventLoop: eventLoop, onlyIfShared: false
        ) else {
            preconditionFailure("a registration that need not share declined")
        }
        if shared { return (connection, position) }
        do {
            try await subscriptions.acquire(channel)
        } catch {
            // `acquire` gave its reference back itself.
            connection.end(.clientGone)
            throw DependencyUnavailable(dependency: "redis", underlying: "subscribe failed: \(error)")
        }
        // From here on the connection owns a reference, given back when it ends; if it ended while subscribing,
        // it is given back now.
        let stillOpen = registry.withLockedValue { registry -> Bool in
            guard registry.connections[connection.id] != nil else { return false }
            registry.holdingReference.insert(connection.id)
            registry.confirmedReferences[channel, default: 0] += 1
            return true
        }
        if !stillOpen {
            let subscriptions = self.subscriptions
            Task { await subscriptions.release(channel) }
        }
        return (connection, position)
    }

    /// `open` without suspending, for a stream opened on its event loop: only when the thread's channel is
    /// subscribed and confirmed here already (the new stream shares it at once) and, with `needsLogPosition`, the
    /// log position is known; nil, with nothing changed, otherwise (and when the user has no slot left: `open`
    /// says so).
    public func openNow(
        thread: UUID, quota: UserQuota?, limits: StreamConnection.Limits, eventLoop: any EventLoop, needsLogPosition: Bool
    ) -> (connection: StreamConnection, logPosition: StreamID?)? {
        guard let (connection, position, _) = try? register(
            thread: thread, quota: quota, limits: limits, eventLoop: eventLoop, onlyIfShared: true, needsLogPosition: needsLogPosition
        ) else { return nil }
        return (connection, position)
    }

    /// The registration both `open`s share: the user's slot, the connection (which unregisters itself when it
    /// ends), its loop's watch and, when the channel's subscription is confirmed, a share of it. With `onlyIfShared`,
    /// nil when it is not (or, with `needsLogPosition`, when the log position is unknown), and nothing kept.
    private func register(
        thread: UUID, quota: UserQuota?, limits: StreamConnection.Limits, eventLoop: any EventLoop, onlyIfShared: Bool,
        needsLogPosition: Bool = false
    ) throws(TooManyStreams) -> (connection: StreamConnection, logPosition: StreamID?, shared: Bool)? {
        let channel = keys.channel(thread)
        if let quota { try reserveSlot(quota) }
        let id = registry.withLockedValue { registry -> UInt64 in
            registry.nextID += 1
            return registry.nextID
        }
        let fanout = registry.withLockedValue { $0.loop(eventLoop, heartbeatInterval: heartbeatInterval) }
        let connection = StreamConnection(id: id, thread: thread, eventLoop: eventLoop, limits: limits) {
            [registry, subscriptions] connection, _ in
            let holdsReference = registry.withLockedValue { registry -> Bool in
                if let quota { FanoutHub.release(quota.user, in: &registry) }
                return FanoutHub.unregister(connection, channel: channel, in: &registry)
            }
            if eventLoop.inEventLoop {
                fanout.remove(connection, channel: channel)
            } else {
                eventLoop.execute { fanout.remove(connection, channel: channel) }
            }
            if holdsReference {
                Task { await subscriptions.release(channel) }
            }
        }
        // Registered, and the log position read, in one step with respect to deliveries (which post and move the
        // position under the same lock): every frame after the position reaches the stream live. A channel already
        // subscribed and confirmed for another stream is shared at once, as `ChannelSubscriptions` would do.
        let registered = registry.withLockedValue { registry -> (StreamID?, Bool)? in
            let shared = registry.confirmedReferences[channel, default: 0] > 0
            if onlyIfShared, !shared || (needsLogPosition && registry.logPositions[channel] == nil) {
                if let quota { FanoutHub.release(quota.user, in: &registry) }
                return nil
            }
            registry.connections[id] = connection
            registry.watchers[channel, default: [:]][ObjectIdentifier(eventLoop), default: 0] += 1
            fanout.post(.register(connection, channel: channel, missesFrames: registry.missesFrames(of: channel)))
            if shared {
                registry.sharedReferences[channel, default: 0] += 1
                registry.holdingReference.insert(id)
            }
            return (registry.logPositions[channel], shared)
        }
        guard let (position, shared) = registered else { return nil }
        return (connection, position, shared)
    }

    /// Records `position`, the newest id of `thread`'s log read after its channel was subscribed, for the
    /// streams that open on it next; a frame received since moved it further already.
    public func rememberLogPosition(_ position: StreamID, of thread: UUID) {
        let channel = keys.channel(thread)
        registry.withLockedValue { registry in
            guard registry.watchers[channel] != nil, registry.tracksPosition(of: channel) else { return }
            registry.logPositions[channel] = max(registry.logPositions[channel] ?? position, position)
        }
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
            guard registry.connections[connection.id] != nil else { return }
            registry.owners[channel] = owner
        }
    }

    /// Removes `connection` from the registry; true if it held a reference taken from `ChannelSubscriptions`, which the
    /// caller gives back there (a shared reference is given back here).
    private static func unregister(_ connection: StreamConnection, channel: String, in registry: inout Registry) -> Bool {
        guard registry.connections.removeValue(forKey: connection.id) != nil else { return false }
        let loop = ObjectIdentifier(connection.eventLoop)
        registry.watchers[channel]?[loop, default: 1] -= 1
        if registry.watchers[channel]?[loop] == 0 { registry.watchers[channel]?[loop] = nil }
        if registry.watchers[channel]?.isEmpty == true {
            registry.watchers[channel] = nil
            registry.owners[channel] = nil
            registry.logPositions[channel] = nil
        }
        guard registry.holdingReference.remove(connection.id) != nil else { return false }
        if let shared = registry.sharedReferences[channel] {
            registry.sharedReferences[channel] = shared > 1 ? shared - 1 : nil
            return false
        }
        let confirmed = registry.confirmedReferences[channel, default: 1]
        registry.confirmedReferences[channel] = confirmed > 1 ? confirmed - 1 : nil
        return true
    }

    /// Open client connections on this node.
    public var connectionCount: Int { registry.withLockedValue { $0.connections.count } }
    /// Threads with at least one local client, i.e. channels this node wants subscribed.
    public var channelCount: Int { registry.withLockedValue { $0.watchers.count } }
    public var isSubscriberConnected: Bool { subscriber.isConnected }
    /// Frames queued for clients that are behind, as of each loop's last heartbeat tick.
    public var queuedFrames: Int {
        registry.withLockedValue { Array($0.loops.values) }.reduce(0) { $0 + $1.queuedFrames.withLockedValue { $0 } }
    }

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
        let all = registry.withLockedValue { Array($0.connections.values) }
        for connection in all {
            connection.end(reason)
        }
    }

    private static func deliver(_ frame: ByteBuffer, on channel: String, registry: NIOLockedValueBox<Registry>) {
        let endsStreams = FrameEncoder.eventName(of: frame) == Substring(StreamEventName.threadDeleted.rawValue)
        let id = FrameEncoder.frameID(of: frame)
        let item = LoopFanout.Item.frame(frame, id: id, channel: channel, endsStreams: endsStreams)
        registry.withLockedValue { registry in
            guard let loops = registry.watchers[channel] else { return }
            if endsStreams { registry.owners[channel] = nil }
            if let id, registry.tracksPosition(of: channel) { registry.logPositions[channel] = max(registry.logPositions[channel] ?? id, id) }
            for loop in loops.keys { registry.loops[loop]?.post(item) }
        }
    }

    private static func handle(_ event: PubSubEvent, registry: NIOLockedValueBox<Registry>, logger: Logger) {
        let loops = registry.withLockedValue { registry in
            switch event {
            case .connected, .reconnected:
                registry.subscriberUp = true
                registry.subscriberDown = false
            case .disconnected:
                registry.subscriberUp = false
                registry.subscriberDown = true
                registry.logPositions.removeAll()
            case .interrupted(let channels):
                registry.interrupted.formUnion(channels)
                for channel in channels { registry.logPositions[channel] = nil }
            case .restored(let channels):
                registry.interrupted.subtract(channels)
            }
            return Array(registry.loops.values)
        }
        switch event {
        case .connected, .reconnected:
            logger.info("redis subscriber connected", metadata: ["event": "\(event)"])
            // Every channel is subscribed again: waiting catch-ups may read the log now, and see everything
            // that was published while the connection was down.
            for fanout in loops { fanout.post(.subscriberReady(nil)) }
        case .disconnected:
            // Whatever is published until the subscriptions are back is missed live; each stream reads it
            // from the log, once the subscriber is back, before its next live frame.
            logger.warning("redis subscriber disconnected; streams will catch up from the log")
            for fanout in loops { fanout.post(.subscriberLost(nil)) }
        case .interrupted(let channels):
            logger.warning("redis subscriptions interrupted; their streams will catch up from the log", metadata: ["channels": "\(channels.count)"])
            for fanout in loops { fanout.post(.subscriberLost(channels)) }
        case .restored(let channels):
            logger.info("redis subscriptions restored", metadata: ["channels": "\(channels.count)"])
            for fanout in loops { fanout.post(.subscriberReady(channels)) }
        }
    }
}

/// Reference counts of wanted channels. The first acquire subscribes (and everyone acquiring meanwhile waits
/// for the same confirmation); the last release unsubscribes. Serialized by the actor, so the commands reach
/// the subscriber connection in the order the transitions happened.
actor ChannelSubscriptions {
    private let subscriber: any RedisPubSub
    private var referenceCounts: [String: Int] = [:]
    private var pending: [String: Task<Void, any Error>] = [:]

    init(subscriber: any RedisPubSub) {
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
            confirmation = Task { try await subscriber.subscribe(channel, timeout: .seconds(5)) }
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
