import Logging
import NIOCore
import NIOPosix

/// One pub/sub connection: the node's only one on a single server, or one cluster shard's.
///
/// `run()` owns the connection: it connects, and when the connection drops it reconnects with exponential backoff
/// and jitter, re-subscribes every wanted channel and then reports `.reconnected`. `subscribe`/`unsubscribe` change
/// the set of wanted channels and talk to Redis when connected. Messages and events are delivered on the
/// subscriber's event loop (one loop of `eventLoopGroup`, fixed at init).
///
/// `sharded`: Redis 7's sharded pub/sub (`SSUBSCRIBE`), for a cluster shard. When Redis ends a sharded
/// subscription itself (its slot moved to another shard) or refuses one (`MOVED`), the channel stops being wanted
/// here and is reported `.interrupted`; a refused `subscribe` throws `RedisError.server("MOVED …")`.
public final class RedisSubscriber: RedisPubSub {
    public typealias Event = PubSubEvent

    private let configuration: RedisConfiguration
    private let name: String
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let core: NIOLoopBoundBox<SubscriberCore>
    private let connected: Locked<Bool>
    private let running = Locked(false)

    public init(
        configuration: RedisConfiguration,
        name: String,
        sharded: Bool = false,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        onMessage: @escaping @Sendable (_ channel: String, _ payload: ByteBuffer) -> Void,
        onEvent: @escaping @Sendable (Event) -> Void = { _ in }
    ) {
        let eventLoop = eventLoopGroup.next()
        let connected = Locked(false)
        self.configuration = configuration
        self.name = name
        self.eventLoop = eventLoop
        self.logger = logger
        self.connected = connected
        self.core = .makeBoxSendingValue(
            SubscriberCore(
                commands: sharded ? .sharded : .classic,
                eventLoop: eventLoop,
                logger: logger,
                connected: connected,
                onMessage: onMessage,
                onEvent: onEvent
            ),
            eventLoop: eventLoop
        )
    }

    /// True while connected with every wanted channel subscribed (between `.connected`/`.reconnected` and
    /// `.disconnected`).
    public var isConnected: Bool {
        self.connected.withLock { $0 }
    }

    /// Runs until the task is cancelled or `shutdown()` is called; both end the subscriber for good.
    /// At most one connection exists at a time. Must not be called twice concurrently.
    public func run() async throws {
        let alreadyRunning = self.running.withLock { running in
            defer { running = true }
            return running
        }
        precondition(!alreadyRunning, "RedisSubscriber.run() is already running")
        defer { self.running.withLock { $0 = false } }

        await withTaskCancellationHandler {
            await self.runConnections()
        } onCancel: {
            self.shutdown()
        }
    }

    /// Subscribes to `channel` and returns once Redis has confirmed it. The channel stays wanted (and is
    /// re-subscribed after every reconnect) until `unsubscribe`, even when this call throws.
    /// Not connected: waits up to `timeout` for a connection, then throws `.notConnected`; connected but no
    /// confirmation within `timeout`: throws `.timeout`. Throws `.notConnected` after `shutdown()`.
    public func subscribe(_ channel: String, timeout: Duration = .seconds(5)) async throws {
        try await self.eventLoop.flatSubmit {
            self.core.value.subscribe(channel, timeout: TimeAmount(timeout))
        }.get()
    }

    /// Removes `channel` from the wanted set and, when connected, unsubscribes and waits for Redis's confirmation
    /// (at most 5 s, or until the connection ends). No message for `channel` is delivered after this returns.
    /// Does not throw when disconnected (nor in practice otherwise).
    public func unsubscribe(_ channel: String) async throws {
        try await self.eventLoop.flatSubmit {
            self.core.value.unsubscribe(channel)
        }.get()
    }

    /// Closes the connection and makes `run()` return; pending `subscribe` calls throw `.notConnected`.
    public func shutdown() {
        self.eventLoop.execute {
            self.core.value.shutdown()
        }
    }

    // MARK: - The connection loop

    private func runConnections() async {
        var attempt = 0
        var connectionID = 0
        while await self.onLoop({ !$0.isShutdown }) == true {
            connectionID += 1
            let id = connectionID
            do {
                let channel = try await self.connect(connectionID: id)
                guard await self.onLoop({ $0.attach(channel, connectionID: id) }) == true else {
                    channel.close(promise: nil)
                    return
                }
                try? await channel.closeFuture.get()
                guard await self.onLoop({ !$0.isShutdown }) == true else { return }
                // A connection that never became ready (Redis still loading its data) keeps the backoff growing.
                if await self.onLoop({ $0.becameReady(connectionID: id) }) == true {
                    attempt = 0
                    self.logger.warning("Redis subscriber connection lost, reconnecting")
                } else {
                    self.logger.debug("Redis subscriber connection closed before it was ready, reconnecting")
                }
            } catch {
                guard await self.onLoop({ !$0.isShutdown }) == true else { return }
                self.logger.warning("Redis subscriber cannot connect", metadata: ["error": "\(error)"])
            }
            let delay = Self.backoff(attempt: attempt)
            attempt = min(attempt + 1, 16)
            self.logger.debug("Redis subscriber reconnecting", metadata: ["delay": "\(delay)"])
            try? await self.eventLoop.flatSubmit { self.core.value.sleep(delay) }.get()
        }
    }

    private func connect(connectionID: Int) async throws -> any Channel {
        let timeout = TimeAmount.seconds(5)
        let deadline = NIODeadline.now() + timeout
        let core = self.core
        let logger = self.logger
        let channel = try await RedisBootstrap.openChannel(
            configuration: self.configuration,
            eventLoopGroup: self.eventLoop,
            connectTimeout: timeout,
            logger: logger,
            makeHandler: { channel in
                // The channel's loop is the subscriber's loop, so the core may be used directly from here on.
                let subscriber = core.value
                subscriber.connecting = channel
                return RedisChannelHandler(logger: logger) { push in
                    subscriber.handle(push, connectionID: connectionID)
                }
            }
        )
        try await RedisBootstrap.handshake(
            channel: channel,
            configuration: self.configuration,
            name: self.name,
            deadline: deadline
        )
        return channel
    }

    /// Runs `body` with the core on the subscriber's event loop; nil if that loop is shut down (the owner must not
    /// do that while `run()` runs; the loop then ends as if shut down).
    private func onLoop<Result: Sendable>(_ body: @escaping @Sendable (SubscriberCore) -> Result) async -> Result? {
        try? await self.eventLoop.submit { body(self.core.value) }.get()
    }

    /// 50 ms doubling to 2 s, with "equal jitter": a uniformly random delay in [d/2, d].
    static func backoff(attempt: Int) -> TimeAmount {
        let base = TimeAmount.milliseconds(50).nanoseconds
        let cap = TimeAmount.seconds(2).nanoseconds
        let delay = min(cap, base << min(attempt, 16))
        return .nanoseconds(delay / 2 + Int64.random(in: 0...(delay / 2)))
    }
}

/// The subscriber's state; lives on the subscriber's event loop (inside a `NIOLoopBoundBox`).
final class SubscriberCore {
    private enum Kind {
        case subscribe
        case unsubscribe
    }

    struct Commands {
        var subscribe: RedisArgument
        var unsubscribe: RedisArgument
        var isSharded: Bool
        /// How many channels one re-subscription command may name (sharded: the channels of one command must
        /// share a slot, so one each).
        var channelsPerCommand: Int { isSharded ? 1 : 1000 }

        static let classic = Commands(subscribe: "SUBSCRIBE", unsubscribe: "UNSUBSCRIBE", isSharded: false)
        static let sharded = Commands(subscribe: "SSUBSCRIBE", unsubscribe: "SUNSUBSCRIBE", isSharded: true)
    }

    private struct Waiter {
        var id: Int
        var promise: EventLoopPromise<Void>
    }

    /// A SUBSCRIBE or UNSUBSCRIBE sent on the current connection whose confirmation has not arrived yet.
    private struct Expectation {
        var kind: Kind
        var waiters: [Waiter]
    }

    private let eventLoop: any EventLoop
    private let logger: Logger
    private let connectedFlag: Locked<Bool>
    private let onMessage: @Sendable (String, ByteBuffer) -> Void
    private let onEvent: @Sendable (RedisSubscriber.Event) -> Void

    /// Channels the owner wants; re-subscribed on every new connection.
    private var wanted: Set<String> = []
    /// Confirmed subscriptions on the current connection.
    private var confirmed: Set<String> = []
    /// Per channel, in the order sent: confirmations still to come on the current connection.
    private var expectations: [String: [Expectation]] = [:]
    /// `subscribe` calls made while there is no connection; they ride on the next connection's re-subscription.
    private var waitingForConnection: [String: [Waiter]] = [:]

    private var connection: (any Channel)?
    /// The channel being connected / handshaking, closed by `shutdown()` so that `run()` returns promptly.
    var connecting: (any Channel)?
    private var connectionID = 0
    private var awaitingBarrier = false
    private var isReady = false
    private var hasBeenReady = false
    /// The last connection that became ready.
    private var readyConnectionID = 0
    private(set) var isShutdown = false
    private var sleeper: EventLoopPromise<Void>?
    private var nextWaiterID = 0

    private let commands: Commands

    init(
        commands: Commands,
        eventLoop: any EventLoop,
        logger: Logger,
        connected: Locked<Bool>,
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        onEvent: @escaping @Sendable (RedisSubscriber.Event) -> Void
    ) {
        self.commands = commands
        self.eventLoop = eventLoop
        self.logger = logger
        self.connectedFlag = connected
        self.onMessage = onMessage
        self.onEvent = onEvent
    }

    // MARK: Connection lifecycle

    /// Adopts a connection that finished its handshake: subscribes every wanted channel, then PINGs; the PONG
    /// (answered after all SUBSCRIBE confirmations) marks the subscriber ready. False after shutdown.
    func attach(_ channel: any Channel, connectionID: Int) -> Bool {
        self.connecting = nil
        guard !self.isShutdown else { return false }
        self.connection = channel
        self.connectionID = connectionID
        self.confirmed = []
        self.expectations = [:]
        self.isReady = false

        let channels = Array(self.wanted)
        for name in channels {
            let waiters = self.waitingForConnection.removeValue(forKey: name) ?? []
            self.expectations[name] = [Expectation(kind: .subscribe, waiters: waiters)]
        }
        for (_, waiters) in self.waitingForConnection {
            for waiter in waiters { waiter.promise.fail(RedisError.notConnected) }
        }
        self.waitingForConnection = [:]

        if channels.isEmpty {
            self.markReady()
        } else {
            var start = 0
            while start < channels.count {
                let end = min(start + self.commands.channelsPerCommand, channels.count)
                channel.sendRedisPushCommand([self.commands.subscribe] + channels[start..<end].map { .string($0) })
                start = end
            }
            self.awaitingBarrier = true
            channel.sendRedisPushCommand(["PING"])
        }
        // Last: if the channel is already closed this runs right away and hands the waiters back.
        channel.closeFuture.assumeIsolated().whenComplete { _ in
            self.detach(connectionID: connectionID)
        }
        return true
    }

    /// Whether connection `connectionID` became ready before it closed.
    func becameReady(connectionID: Int) -> Bool {
        self.readyConnectionID == connectionID
    }

    private func markReady() {
        self.isReady = true
        self.readyConnectionID = self.connectionID
        self.connectedFlag.withLock { $0 = true }
        let event: RedisSubscriber.Event = self.hasBeenReady ? .reconnected : .connected
        self.hasBeenReady = true
        self.logger.debug("Redis subscriber ready", metadata: ["channels": "\(self.wanted.count)"])
        self.onEvent(event)
    }

    private func detach(connectionID: Int) {
        guard connectionID == self.connectionID, self.connection != nil else { return }
        let wasReady = self.isReady
        self.connection = nil
        self.isReady = false
        self.awaitingBarrier = false
        self.confirmed = []
        self.connectedFlag.withLock { $0 = false }
        for (name, queue) in self.expectations {
            for expectation in queue {
                for waiter in expectation.waiters {
                    switch expectation.kind {
                    case .subscribe where self.wanted.contains(name) && !self.isShutdown:
                        self.waitingForConnection[name, default: []].append(waiter)
                    case .subscribe:
                        waiter.promise.fail(RedisError.notConnected)
                    case .unsubscribe:
                        waiter.promise.succeed()
                    }
                }
            }
        }
        self.expectations = [:]
        if wasReady {
            self.onEvent(.disconnected)
        }
    }

    func shutdown() {
        guard !self.isShutdown else { return }
        self.isShutdown = true
        for (_, waiters) in self.waitingForConnection {
            for waiter in waiters { waiter.promise.fail(RedisError.notConnected) }
        }
        self.waitingForConnection = [:]
        self.connection?.close(promise: nil)
        self.connecting?.close(promise: nil)
        self.connecting = nil
        self.sleeper?.succeed()
    }

    /// The reconnect backoff; cut short by `shutdown()`.
    func sleep(_ delay: TimeAmount) -> EventLoopFuture<Void> {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.sleeper = promise
        let timer = self.eventLoop.assumeIsolated().scheduleTask(in: delay) { promise.succeed() }
        promise.futureResult.assumeIsolated().whenComplete { _ in
            timer.cancel()
            self.sleeper = nil
        }
        if self.isShutdown { promise.succeed() }
        return promise.futureResult
    }

    // MARK: Pushes from Redis

    func handle(_ push: PubSubPush, connectionID: Int) {
        guard connectionID == self.connectionID, self.connection != nil else { return }
        switch push {
        case .message(let channel, let payload):
            if self.wanted.contains(channel) {
                self.onMessage(channel, payload)
            }
        case .subscribe(let channel):
            self.confirmed.insert(channel)
            self.confirm(.subscribe, channel: channel)
        case .unsubscribe(let channel):
            self.confirmed.remove(channel)
            if self.expectations[channel]?.first?.kind == .unsubscribe {
                self.confirm(.unsubscribe, channel: channel)
            } else if self.commands.isSharded, self.wanted.remove(channel) != nil {
                // Redis ended the subscription itself: the channel's slot now lives on another shard.
                self.onEvent(.interrupted([channel]))
            }
        case .error(let message):
            self.refused(message)
        case .pong:
            if self.awaitingBarrier {
                self.awaitingBarrier = false
                self.markReady()
            }
        }
    }

    /// An error reply to a subscription command or to the ready-`PING`. `MOVED <slot> …` answers the `SSUBSCRIBE`s of
    /// that slot sent to a shard that does not own it: they fail, and their channels stop being wanted here.
    private func refused(_ message: String) {
        let words = message.split(separator: " ")
        guard self.commands.isSharded, words.count >= 2, words[0] == "MOVED", let slot = Int(words[1]) else {
            if self.awaitingBarrier {
                // The PING that would make this connection ready was refused (`LOADING`: Redis is still reading its
                // data from disk): nothing more will come, so try again on a new connection.
                self.logger.warning("Redis subscriber: not ready, reconnecting", metadata: ["error": "\(message)"])
                self.connection?.close(promise: nil)
            } else {
                self.logger.warning("Redis subscriber: error reply", metadata: ["error": "\(message)"])
            }
            return
        }
        for (channel, queue) in self.expectations where queue.first?.kind == .subscribe && HashSlot.of(channel) == slot {
            self.expectations[channel] = nil
            let wasWanted = self.wanted.remove(channel) != nil
            for waiter in queue.first?.waiters ?? [] {
                waiter.promise.fail(RedisError.server(message))
            }
            if wasWanted, queue.first?.waiters.isEmpty ?? true {
                self.onEvent(.interrupted([channel]))
            }
        }
    }

    private func confirm(_ kind: Kind, channel: String) {
        guard var queue = self.expectations[channel], !queue.isEmpty else { return }
        let expectation = queue.removeFirst()
        self.expectations[channel] = queue.isEmpty ? nil : queue
        if expectation.kind != kind {
            self.logger.warning("Redis subscriber: confirmation out of order", metadata: ["channel": "\(channel)"])
        }
        for waiter in expectation.waiters {
            waiter.promise.succeed()
        }
    }

    // MARK: Requests from the owner

    func subscribe(_ channel: String, timeout: TimeAmount) -> EventLoopFuture<Void> {
        guard !self.isShutdown else {
            return self.eventLoop.makeFailedFuture(RedisError.notConnected)
        }
        self.wanted.insert(channel)
        if self.connection != nil, self.expectations[channel] == nil, self.confirmed.contains(channel) {
            return self.eventLoop.makeSucceededVoidFuture()
        }
        let waiter = self.makeWaiter()

        if let connection = self.connection {
            var queue = self.expectations[channel] ?? []
            if let last = queue.last, last.kind == .subscribe {
                queue[queue.count - 1].waiters.append(waiter)
            } else {
                connection.sendRedisPushCommand([self.commands.subscribe, .string(channel)])
                queue.append(Expectation(kind: .subscribe, waiters: [waiter]))
            }
            self.expectations[channel] = queue
        } else {
            self.waitingForConnection[channel, default: []].append(waiter)
        }

        let timer = self.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.subscribeTimedOut(waiterID: waiter.id, channel: channel)
        }
        waiter.promise.futureResult.assumeIsolated().whenComplete { _ in timer.cancel() }
        return waiter.promise.futureResult
    }

    private func subscribeTimedOut(waiterID: Int, channel: String) {
        let error: RedisError = self.connection == nil ? .notConnected : .timeout
        if var waiters = self.waitingForConnection[channel], let index = waiters.firstIndex(where: { $0.id == waiterID }) {
            let waiter = waiters.remove(at: index)
            self.waitingForConnection[channel] = waiters.isEmpty ? nil : waiters
            waiter.promise.fail(error)
            return
        }
        guard var queue = self.expectations[channel] else { return }
        for position in queue.indices {
            if let index = queue[position].waiters.firstIndex(where: { $0.id == waiterID }) {
                let waiter = queue[position].waiters.remove(at: index)
                self.expectations[channel] = queue
                waiter.promise.fail(error)
                return
            }
        }
    }

    func unsubscribe(_ channel: String) -> EventLoopFuture<Void> {
        self.wanted.remove(channel)
        if let waiters = self.waitingForConnection.removeValue(forKey: channel) {
            for waiter in waiters { waiter.promise.fail(RedisError.notConnected) }
        }
        guard let connection = self.connection else {
            return self.eventLoop.makeSucceededVoidFuture()
        }
        var queue = self.expectations[channel] ?? []
        guard !queue.isEmpty || self.confirmed.contains(channel) else {
            return self.eventLoop.makeSucceededVoidFuture()
        }
        let waiter = self.makeWaiter()
        if let last = queue.last, last.kind == .unsubscribe {
            queue[queue.count - 1].waiters.append(waiter)
        } else {
            connection.sendRedisPushCommand([self.commands.unsubscribe, .string(channel)])
            queue.append(Expectation(kind: .unsubscribe, waiters: [waiter]))
        }
        self.expectations[channel] = queue
        // Do not hang the caller on an unresponsive Redis: the channel is already unwanted, its messages dropped.
        let timer = self.eventLoop.assumeIsolated().scheduleTask(in: .seconds(5)) { waiter.promise.succeed() }
        waiter.promise.futureResult.assumeIsolated().whenComplete { _ in timer.cancel() }
        return waiter.promise.futureResult
    }

    private func makeWaiter() -> Waiter {
        self.nextWaiterID += 1
        return Waiter(id: self.nextWaiterID, promise: self.eventLoop.makePromise(of: Void.self))
    }
}
