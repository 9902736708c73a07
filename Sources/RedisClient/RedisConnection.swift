import Logging
import NIOCore
import NIOPosix

/// One TCP connection to Redis. Commands from any number of tasks are pipelined; replies are matched FIFO.
public final class RedisConnection: Sendable {
    private let channel: any Channel
    private let logger: Logger

    private init(channel: any Channel, logger: Logger) {
        self.channel = channel
        self.logger = logger
    }

    /// Connects, then sends AUTH (when a password is configured), SELECT (database ≠ 0) and CLIENT SETNAME (when
    /// `name` is given). `connectTimeout` bounds all of it; errors: `.timeout`, `.notConnected` (connect failed),
    /// `.server` (e.g. WRONGPASS), `.connectionClosed`.
    public static func connect(
        configuration: RedisConfiguration,
        name: String? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        connectTimeout: Duration = .seconds(5)
    ) async throws -> RedisConnection {
        let timeout = TimeAmount(connectTimeout)
        let deadline = NIODeadline.now() + timeout
        let channel = try await RedisBootstrap.openChannel(
            configuration: configuration,
            eventLoopGroup: eventLoopGroup,
            connectTimeout: timeout,
            logger: logger,
            makeHandler: { _ in RedisChannelHandler(logger: logger) }
        )
        try await RedisBootstrap.handshake(channel: channel, configuration: configuration, name: name, deadline: deadline)
        return RedisConnection(channel: channel, logger: logger)
    }

    /// Sends one command and returns its reply. An error reply throws `RedisError.server(message)`; a connection
    /// that closes before the reply throws `.connectionClosed` (or `.notConnected` if it was already closed).
    public func send(_ arguments: [RedisArgument]) async throws -> RESPValue {
        try await self.send(arguments, asking: false)
    }

    /// With `asking`, the command is preceded by `ASKING` (see `Channel.sendRedisCommandAsking`).
    func send(_ arguments: [RedisArgument], asking: Bool) async throws -> RESPValue {
        guard self.channel.isActive else {
            throw RedisError.notConnected
        }
        let future = asking ? self.channel.sendRedisCommandAsking(arguments) : self.channel.sendRedisCommand(arguments)
        let reply = try await future.get()
        if case .error(let message) = reply {
            throw RedisError.server(message)
        }
        return reply
    }

    /// Sends one command now, without suspending; its reply as a future (an error reply fails it); nil when the
    /// connection is closed.
    func sendNow(_ arguments: [RedisArgument]) -> EventLoopFuture<RESPValue>? {
        guard self.channel.isActive else { return nil }
        return self.channel.sendRedisCommand(arguments).flatMapThrowing { reply in
            if case .error(let message) = reply { throw RedisError.server(message) }
            return reply
        }
    }

    public func send(_ arguments: RedisArgument...) async throws -> RESPValue {
        try await self.send(arguments)
    }

    public var isActive: Bool {
        self.channel.isActive
    }

    /// Closes the connection; commands in flight fail with `.connectionClosed`.
    public func close() async {
        do {
            try await self.channel.close()
        } catch {
            // Already closed.
        }
    }
}
