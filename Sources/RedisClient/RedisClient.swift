import Logging
import NIOCore
import NIOPosix

/// A command client shared by many concurrent tasks: one lazily (re)connected, pipelined connection.
///
/// A dead connection is dropped and the next call reconnects (no backoff: the caller's call rate is the retry
/// rate). A command in flight when the connection dies throws (`.connectionClosed` / `.notConnected`) and is not
/// retried: the caller decides.
public final class RedisClient: Sendable {
    private struct State: Sendable {
        var connection: RedisConnection?
        var connecting: Task<RedisConnection, any Error>?
        var isClosed = false
    }

    private let configuration: RedisConfiguration
    private let name: String?
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let observer: RedisClientObserver
    private let state = Locked(State())

    public init(
        configuration: RedisConfiguration,
        name: String? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        observer: RedisClientObserver = .none
    ) {
        self.configuration = configuration
        self.name = name
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.observer = observer
    }

    /// Sends one command; an error reply throws `RedisError.server(message)`.
    public func send(_ arguments: [RedisArgument]) async throws -> RESPValue {
        try await self.send(arguments, asking: false)
    }

    /// With `asking`, preceded by `ASKING` on the same connection (a cluster's redirect to a migrating slot).
    func send(_ arguments: [RedisArgument], asking: Bool) async throws -> RESPValue {
        try await observingFailure { try await self.sendUnobserved(arguments, asking: asking) }
    }

    private func sendUnobserved(_ arguments: [RedisArgument], asking: Bool) async throws -> RESPValue {
        observer.commandSent()
        return try await self.connection().send(arguments, asking: asking)
    }

    private func observingFailure(_ body: () async throws -> RESPValue) async throws -> RESPValue {
        do {
            return try await body()
        } catch {
            observer.commandFailed(error)
            throw error
        }
    }

    public func send(_ arguments: RedisArgument...) async throws -> RESPValue {
        try await self.send(arguments)
    }

    /// EVALSHA, falling back to EVAL (which also loads the script) when Redis answers NOSCRIPT.
    public func eval(_ script: RedisScript, keys: [String], arguments: [RedisArgument]) async throws -> RESPValue {
        try await self.eval(script, keys: keys, arguments: arguments, asking: false)
    }

    /// EVALSHA on the connection if it is up (see `RedisCommands.evalNow`).
    public func evalNow(_ script: RedisScript, keys: [String], arguments: [RedisArgument]) -> EventLoopFuture<RESPValue>? {
        let connection = self.state.withLock { state in state.connection?.isActive == true ? state.connection : nil }
        guard let connection, let reply = connection.sendNow(Self.evalSHA(script, keys: keys, arguments: arguments)) else { return nil }
        observer.commandSent()
        let observer = self.observer
        reply.whenFailure { error in
            if case RedisError.server(let message) = error, message.hasPrefix("NOSCRIPT") { return }
            observer.commandFailed(error)
        }
        return reply
    }

    private static func evalSHA(_ script: RedisScript, keys: [String], arguments: [RedisArgument]) -> [RedisArgument] {
        var command: [RedisArgument] = ["EVALSHA", .string(script.sha1), .int(keys.count)]
        command.reserveCapacity(3 + keys.count + arguments.count)
        command.append(contentsOf: keys.map { .string($0) })
        command.append(contentsOf: arguments)
        return command
    }

    func eval(_ script: RedisScript, keys: [String], arguments: [RedisArgument], asking: Bool) async throws -> RESPValue {
        var command = Self.evalSHA(script, keys: keys, arguments: arguments)
        // NOSCRIPT is the expected first answer after a Redis restart, not a failure worth reporting.
        return try await observingFailure {
            do {
                return try await self.sendUnobserved(command, asking: asking)
            } catch RedisError.server(let message) where message.hasPrefix("NOSCRIPT") {
                command[0] = "EVAL"
                command[1] = .string(script.source)
                return try await self.sendUnobserved(command, asking: asking)
            }
        }
    }

    /// Closes the connection; later calls throw `.notConnected`.
    public func close() async {
        let (connection, connecting) = self.state.withLock { state in
            state.isClosed = true
            defer {
                state.connection = nil
                state.connecting = nil
            }
            return (state.connection, state.connecting)
        }
        if let connecting {
            connecting.cancel()
            if let connection = try? await connecting.value {
                await connection.close()
            }
        }
        await connection?.close()
    }

    private enum Next {
        case ready(RedisConnection)
        case wait(Task<RedisConnection, any Error>)
        case closed
    }

    /// The live connection, connecting first when there is none (concurrent callers share one attempt).
    private func connection() async throws -> RedisConnection {
        let next: Next = self.state.withLock { state in
            if state.isClosed {
                return .closed
            }
            if let connection = state.connection, connection.isActive {
                return .ready(connection)
            }
            state.connection = nil
            if let connecting = state.connecting {
                return .wait(connecting)
            }
            let connecting = Task { [configuration, name, eventLoopGroup, logger] in
                try await RedisConnection.connect(
                    configuration: configuration,
                    name: name,
                    eventLoopGroup: eventLoopGroup,
                    logger: logger
                )
            }
            state.connecting = connecting
            return .wait(connecting)
        }

        switch next {
        case .closed:
            throw RedisError.notConnected
        case .ready(let connection):
            return connection
        case .wait(let connecting):
            let waitStart = ContinuousClock.now
            let result = await connecting.result
            observer.connectionAwaited(ContinuousClock.now - waitStart)
            let orphan: RedisConnection? = self.state.withLock { state in
                guard state.connecting == connecting else { return nil }
                state.connecting = nil
                guard case .success(let connection) = result else { return nil }
                if state.isClosed { return connection }
                state.connection = connection
                return nil
            }
            if let orphan {
                await orphan.close()
                throw RedisError.notConnected
            }
            if case .failure(let error) = result {
                self.logger.debug("Redis connect failed", metadata: ["error": "\(error)"])
            }
            return try result.get()
        }
    }
}

extension RedisClient: RedisCommands {
    /// One server holds every key.
    public func send(_ arguments: [RedisArgument], key: String?) async throws -> RESPValue {
        try await self.send(arguments)
    }

    public func ping() async -> RedisHealth {
        let answered = (try? await self.send(["PING"])) != nil
        return RedisHealth(servers: [RedisEndpoint(host: configuration.host, port: configuration.port).description: answered])
    }
}
