import Logging
import NIOCore
import NIOPosix

/// A node's subscriptions on a Redis Cluster with sharded pub/sub: one `SSUBSCRIBE` connection per master (a
/// sharded `RedisSubscriber` each), every channel subscribed on the master serving its slot.
///
/// When a shard's connection drops, its channels are reported `.interrupted`; the layout is then learnt again
/// until every channel is subscribed on its (possibly new, promoted) master, and each is reported `.restored` once
/// its subscription there is confirmed. A channel whose slot migrated (Redis ends the subscription with
/// `sunsubscribe`) goes the same way. The owner catches up from the log between the two events, so nothing
/// published meanwhile is lost.
public final class RedisClusterSubscriber: RedisPubSub {
    private struct Shard: Sendable {
        let subscriber: RedisSubscriber
        let task: Task<Void, Never>
    }

    private struct State: Sendable {
        var shards: [RedisEndpoint: Shard] = [:]
        /// Wanted channels, and the shard each is subscribed on (or being subscribed on).
        var owners: [String: RedisEndpoint] = [:]
        /// Wanted channels whose messages may be missed until they are confirmed on their shard again.
        var interrupted: Set<String> = []
        /// Interrupted channels with a subscription on their new shard in flight.
        var moving: Set<String> = []
        var announcedConnected = false
        var isShutdown = false
        var relearning = false
    }

    private enum Signal: Sendable {
        case shard(RedisEndpoint, PubSubEvent)
        /// A subscription made to move a channel to `RedisEndpoint` was confirmed there.
        case moved(String, RedisEndpoint)
        case relearned
    }

    private let configuration: RedisClusterConfiguration
    private let topology: ClusterTopology
    private let name: String
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let onMessage: @Sendable (String, ByteBuffer) -> Void
    private let onEvent: @Sendable (PubSubEvent) -> Void
    private let onShardEvent: @Sendable (RedisEndpoint, PubSubEvent) -> Void
    private let state = Locked(State())
    private let signals: AsyncStream<Signal>
    private let signal: AsyncStream<Signal>.Continuation

    /// `onShardEvent` sees each shard's own connection events (for per-shard monitoring).
    public init(
        configuration: RedisClusterConfiguration,
        topology: ClusterTopology,
        name: String,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        onMessage: @escaping @Sendable (_ channel: String, _ payload: ByteBuffer) -> Void,
        onEvent: @escaping @Sendable (PubSubEvent) -> Void = { _ in },
        onShardEvent: @escaping @Sendable (RedisEndpoint, PubSubEvent) -> Void = { _, _ in }
    ) {
        self.configuration = configuration
        self.topology = topology
        self.name = name
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.onMessage = onMessage
        self.onEvent = onEvent
        self.onShardEvent = onShardEvent
        (self.signals, self.signal) = AsyncStream.makeStream(of: Signal.self)
    }

    public var isConnected: Bool {
        let masters = topology.layout.masters
        return state.withLock { state in
            !state.isShutdown && !masters.isEmpty && state.interrupted.isEmpty
                && masters.allSatisfy { state.shards[$0]?.subscriber.isConnected == true }
        }
    }

    public func run() async throws {
        await withTaskCancellationHandler {
            var attempt = 0
            while !state.withLock({ $0.isShutdown }) {
                do {
                    try await topology.refresh()
                    break
                } catch {
                    logger.warning("Redis cluster: no seed node answers", metadata: ["error": "\(error)"])
                    attempt += 1
                    try? await Task.sleep(for: .nanoseconds(RedisSubscriber.backoff(attempt: attempt).nanoseconds))
                }
            }
            signal.yield(.relearned)
            for await signal in signals {
                handle(signal)
            }
            let shards = state.withLock { state in
                defer { state.shards = [:] }
                return Array(state.shards.values)
            }
            for shard in shards {
                shard.subscriber.shutdown()
                await shard.task.value
            }
        } onCancel: {
            self.shutdown()
        }
    }

    public func subscribe(_ channel: String, timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        let slot = HashSlot.of(channel)
        var attempt = 0
        while true {
            attempt += 1
            if topology.master(ofSlot: slot) == nil { _ = try? await topology.refresh() }
            guard let endpoint = topology.master(ofSlot: slot) else { throw RedisError.notConnected }
            let shard = try state.withLock { state throws -> RedisSubscriber in
                guard !state.isShutdown else { throw RedisError.notConnected }
                state.owners[channel] = endpoint
                return self.shard(for: endpoint, in: &state)
            }
            do {
                return try await shard.subscribe(channel, timeout: max(deadline - ContinuousClock.now, .milliseconds(1)))
            } catch RedisError.server(let message) where message.hasPrefix("MOVED") && attempt < 3 {
                // The layout changed under us: learn it and try the new owner.
                _ = try? await topology.refresh()
            }
        }
    }

    public func unsubscribe(_ channel: String) async throws {
        let shard = state.withLock { state -> RedisSubscriber? in
            state.interrupted.remove(channel)
            return state.owners.removeValue(forKey: channel).flatMap { state.shards[$0]?.subscriber }
        }
        try await shard?.unsubscribe(channel)
    }

    public func shutdown() {
        let shards = state.withLock { state in
            state.isShutdown = true
            return Array(state.shards.values)
        }
        for shard in shards { shard.subscriber.shutdown() }
        signal.finish()
    }

    // MARK: - Following the cluster

    private func handle(_ signal: Signal) {
        switch signal {
        case .shard(let endpoint, let event):
            onShardEvent(endpoint, event)
            switch event {
            case .connected, .reconnected:
                shardReady(endpoint)
            case .disconnected:
                interrupt(state.withLock { state in Set(state.owners.filter { $0.value == endpoint }.keys) })
                relearnUntilSettled()
            case .interrupted(let channels):
                // Redis moved these channels' slot away from the shard.
                interrupt(channels)
                relearnUntilSettled()
            case .restored:
                break
            }
        case .moved(let channel, let endpoint):
            let (restored, stray) = state.withLock { state -> (Bool, RedisSubscriber?) in
                guard state.owners[channel] == endpoint else {
                    // Unsubscribed, or moved again, meanwhile.
                    return (false, state.shards[endpoint]?.subscriber)
                }
                return (state.interrupted.remove(channel) != nil, nil)
            }
            if restored { onEvent(.restored([channel])) }
            if let stray { Task { try? await stray.unsubscribe(channel) } }
        case .relearned:
            follow(topology.layout)
        }
    }

    private func shardReady(_ endpoint: RedisEndpoint) {
        let masters = topology.layout.masters
        let restored = state.withLock { state -> Set<String> in
            // Only channels whose subscriptions this connection holds: a shard reconnecting to a node that is no
            // master any more does not restore anything (the layout moves its channels first).
            let restored = state.interrupted.filter { state.owners[$0] == endpoint && masters.contains(endpoint) }
            state.interrupted.subtract(restored)
            return restored
        }
        announceConnectedOnce()
        if !restored.isEmpty { onEvent(.restored(restored)) }
    }

    /// `.connected`, the first time every master's shard is up.
    private func announceConnectedOnce() {
        let masters = topology.layout.masters
        let announce = state.withLock { state -> Bool in
            guard !state.announcedConnected, !masters.isEmpty,
                masters.allSatisfy({ state.shards[$0]?.subscriber.isConnected == true })
            else { return false }
            state.announcedConnected = true
            return true
        }
        if announce { onEvent(.connected) }
    }

    private func interrupt(_ channels: Set<String>) {
        let newly = state.withLock { state in
            let newly = channels.filter { state.owners[$0] != nil }.subtracting(state.interrupted)
            state.interrupted.formUnion(newly)
            return newly
        }
        if !newly.isEmpty { onEvent(.interrupted(newly)) }
    }

    /// Learns the layout again, every few hundred milliseconds (at most every second), until no channel is
    /// interrupted and every master's shard is connected: a master that died before the node could reach it is
    /// replaced once the cluster has promoted its replica.
    private func relearnUntilSettled() {
        let start = state.withLock { state in
            defer { state.relearning = true }
            return !state.relearning && !state.isShutdown
        }
        guard start else { return }
        Task {
            var attempt = 0
            while true {
                attempt += 1
                try? await Task.sleep(for: .milliseconds(min(100 * attempt, 1000)))
                let masters = topology.layout.masters
                let settled = state.withLock { state in
                    let shardsUp = !masters.isEmpty && masters.allSatisfy { state.shards[$0]?.subscriber.isConnected == true }
                    if (state.interrupted.isEmpty && shardsUp) || state.isShutdown { state.relearning = false }
                    return !state.relearning
                }
                if settled { return }
                if (try? await topology.refresh()) != nil { signal.yield(.relearned) }
            }
        }
    }

    /// Opens a shard for every master, closes those of nodes that are no masters any more, and moves every
    /// channel whose slot another master serves now.
    private func follow(_ layout: ClusterTopology.Layout) {
        let (moves, newlyInterrupted, retired) = state.withLock { state -> ([(String, RedisSubscriber)], Set<String>, [Shard]) in
            guard !state.isShutdown else { return ([], [], []) }
            var newlyInterrupted: Set<String> = []
            for master in layout.masters { _ = shard(for: master, in: &state) }
            var moves: [(String, RedisSubscriber)] = []
            for (channel, owner) in state.owners {
                // A channel moves when another master serves its slot now, or, still interrupted, is subscribed
                // again where it is (a refused or timed-out subscription there).
                guard let master = layout.master(ofSlot: HashSlot.of(channel)), master != owner || state.interrupted.contains(channel),
                    !state.moving.contains(channel)
                else { continue }
                state.owners[channel] = master
                if state.interrupted.insert(channel).inserted { newlyInterrupted.insert(channel) }
                state.moving.insert(channel)
                moves.append((channel, shard(for: master, in: &state)))
            }
            let owning = Set(state.owners.values)
            let retired = state.shards.filter { !layout.masters.contains($0.key) && !owning.contains($0.key) }
            for endpoint in retired.keys { state.shards[endpoint] = nil }
            return (moves, newlyInterrupted, Array(retired.values))
        }
        if !moves.isEmpty {
            logger.info("Redis cluster: channels subscribed on their shard again", metadata: ["channels": "\(moves.count)"])
        }
        if !newlyInterrupted.isEmpty { onEvent(.interrupted(newlyInterrupted)) }
        for shard in retired { shard.subscriber.shutdown() }
        announceConnectedOnce()
        // A shard not up yet may be a master that is gone: keep learning until the cluster says so.
        relearnUntilSettled()
        for (channel, subscriber) in moves {
            let endpoint = state.withLock { $0.owners[channel] }
            Task {
                let confirmed = (try? await subscriber.subscribe(channel, timeout: .seconds(5))) != nil
                self.state.withLock { _ = $0.moving.remove(channel) }
                if confirmed, let endpoint {
                    self.signal.yield(.moved(channel, endpoint))
                } else {
                    // Still interrupted: the next round of learning tries again.
                    self.relearnUntilSettled()
                }
            }
        }
    }

    /// The shard subscriber of `endpoint`, started on first use.
    private func shard(for endpoint: RedisEndpoint, in state: inout State) -> RedisSubscriber {
        if let shard = state.shards[endpoint] { return shard.subscriber }
        let signal = self.signal
        let subscriber = RedisSubscriber(
            configuration: configuration.configuration(for: endpoint), name: name, sharded: true, eventLoopGroup: eventLoopGroup,
            logger: logger.with(shard: endpoint), onMessage: onMessage,
            onEvent: { event in signal.yield(.shard(endpoint, event)) }
        )
        let task = Task { _ = try? await subscriber.run() }
        state.shards[endpoint] = Shard(subscriber: subscriber, task: task)
        return subscriber
    }
}

extension Logger {
    fileprivate func with(shard: RedisEndpoint) -> Logger {
        var logger = self
        logger[metadataKey: "shard"] = "\(shard)"
        return logger
    }
}
