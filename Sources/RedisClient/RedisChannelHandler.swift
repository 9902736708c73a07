import CHiredis
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// A command on its way to Redis: its encoded bytes and where its reply goes.
struct RedisCommand: Sendable {
    var bytes: ByteBuffer
    /// Completed with the reply, matched FIFO. nil for commands answered by pub/sub pushes (SUBSCRIBE, UNSUBSCRIBE,
    /// PING in subscribed mode).
    var promise: EventLoopPromise<RESPValue>?
}

/// The one handler of a Redis channel: writes commands, feeds received bytes to hiredis's reader, and hands each
/// complete reply to the oldest waiting command, or, on a subscriber connection, to `onPush`.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisCommand
    typealias OutboundOut = ByteBuffer

    private let reader = RESPReader()
    private var pending = CircularBuffer<EventLoopPromise<RESPValue>>(initialCapacity: 16)
    private var allocator = ByteBufferAllocator()
    private var flushScheduled = false
    private var isClosed = false
    private let logger: Logger
    private let onPush: ((PubSubPush) -> Void)?

    init(logger: Logger, onPush: ((PubSubPush) -> Void)? = nil) {
        self.logger = logger
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.allocator = context.channel.allocator
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.isClosed = true
        self.failPending(RedisError.connectionClosed)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data)
        do {
            try self.reader.feed(bytes)
            while let reply = try self.reader.next() {
                defer { freeReplyObject(reply) }
                if let onPush = self.onPush,
                    let push = PubSubPush(reply: reply, commandPending: !self.pending.isEmpty, allocator: self.allocator)
                {
                    onPush(push)
                    continue
                }
                let value = RESPValue(reply: reply, allocator: self.allocator)
                guard let promise = self.pending.popFirst() else {
                    throw RedisError.protocolError("unexpected reply \(value)")
                }
                promise.succeed(value)
            }
        } catch {
            self.logger.error("Redis protocol error, closing the connection", metadata: ["error": "\(error)"])
            self.isClosed = true
            self.failPending(error)
            context.close(promise: nil)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = self.unwrapOutboundIn(data)
        guard !self.isClosed else {
            command.promise?.fail(RedisError.connectionClosed)
            promise?.fail(RedisError.connectionClosed)
            return
        }
        if let replyPromise = command.promise {
            self.pending.append(replyPromise)
        }
        context.write(self.wrapOutboundOut(command.bytes), promise: promise)
    }

    /// Coalesces flushes: many tasks pipelining commands at once cost one write syscall per event-loop turn instead
    /// of one per command. The deferred flush runs after the writes already queued on the event loop.
    func flush(context: ChannelHandlerContext) {
        guard !self.flushScheduled else { return }
        self.flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            context.flush()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.isClosed = true
        self.failPending(RedisError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("Redis connection error, closing", metadata: ["error": "\(error)"])
        self.isClosed = true
        self.failPending(RedisError.connectionClosed)
        context.close(promise: nil)
    }

    private func failPending(_ error: any Error) {
        while let promise = self.pending.popFirst() {
            promise.fail(error)
        }
    }
}

extension Channel {
    /// Encodes and writes one command; the future completes with its reply (error replies included, as `.error`).
    func sendRedisCommand(_ arguments: [RedisArgument]) -> EventLoopFuture<RESPValue> {
        let bytes: ByteBuffer
        do {
            bytes = try RESPEncoder.encode(arguments, allocator: self.allocator)
        } catch {
            return self.eventLoop.makeFailedFuture(error)
        }
        let promise = self.eventLoop.makePromise(of: RESPValue.self)
        // If the handler is gone (channel closed), the write fails and nobody else would complete the promise.
        self.writeAndFlush(RedisCommand(bytes: bytes, promise: promise)).whenFailure { _ in
            promise.fail(RedisError.connectionClosed)
        }
        return promise.futureResult
    }

    /// `ASKING` and then the command, back to back on this connection (no other command between them): how a
    /// cluster client sends a command to the shard a slot is migrating to. The future completes with the command's
    /// reply.
    func sendRedisCommandAsking(_ arguments: [RedisArgument]) -> EventLoopFuture<RESPValue> {
        let asking: ByteBuffer, command: ByteBuffer
        do {
            asking = try RESPEncoder.encode(["ASKING"], allocator: self.allocator)
            command = try RESPEncoder.encode(arguments, allocator: self.allocator)
        } catch {
            return self.eventLoop.makeFailedFuture(error)
        }
        let askingReply = self.eventLoop.makePromise(of: RESPValue.self)
        let promise = self.eventLoop.makePromise(of: RESPValue.self)
        self.eventLoop.execute {
            self.write(RedisCommand(bytes: asking, promise: askingReply), promise: nil)
            self.writeAndFlush(RedisCommand(bytes: command, promise: promise)).whenFailure { _ in
                askingReply.fail(RedisError.connectionClosed)
                promise.fail(RedisError.connectionClosed)
            }
        }
        return askingReply.futureResult.flatMap { reply in
            if case .error(let message) = reply {
                return promise.futureResult.flatMapThrowing { _ in throw RedisError.server(message) }
            }
            return promise.futureResult
        }
    }

    /// Writes a command whose answer arrives as a pub/sub push.
    func sendRedisPushCommand(_ arguments: [RedisArgument]) {
        guard let bytes = try? RESPEncoder.encode(arguments, allocator: self.allocator) else { return }
        self.writeAndFlush(RedisCommand(bytes: bytes, promise: nil), promise: nil)
    }
}

/// Completes `promise` when the TLS handshake succeeds, fails it with the handshake's error (or the close).
private final class TLSHandshakeOutcome: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<Void>

    init(promise: EventLoopPromise<Void>) {
        self.promise = promise
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { promise.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(RedisError.connectionClosed)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise.fail(RedisError.connectionClosed)
    }
}

/// Opening a channel and the AUTH / SELECT / CLIENT SETNAME handshake, shared by connections and the subscriber.
enum RedisBootstrap {
    static func openChannel(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup,
        connectTimeout: TimeAmount,
        logger: Logger,
        makeHandler: @escaping @Sendable (any Channel) -> RedisChannelHandler
    ) async throws -> any Channel {
        let tls = try configuration.tls.map { try tlsContext($0, logger: logger) }
        let bootstrap = ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        // SNI and the name check need a host name; an IP address is checked against the certificate's
                        // IP entries instead.
                        let isAddress = (try? SocketAddress(ipAddress: configuration.host, port: 0)) != nil
                        try channel.pipeline.syncOperations.addHandlers([
                            NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : configuration.host),
                            TLSHandshakeOutcome(promise: channel.eventLoop.makePromise()),
                        ])
                    }
                    try channel.pipeline.syncOperations.addHandler(makeHandler(channel))
                }
            }
        do {
            let channel = try await bootstrap.connect(host: configuration.host, port: configuration.port).get()
            if tls != nil {
                // Connected means the handshake is done too, so that its failure is reported as what it is.
                let outcome = try await channel.eventLoop.submit {
                    try channel.pipeline.syncOperations.handler(type: TLSHandshakeOutcome.self).promise.futureResult
                }.get()
                do {
                    try await outcome.get()
                } catch {
                    channel.close(promise: nil)
                    throw RedisError.tls("handshake with \(configuration.host):\(configuration.port) failed: \(error)")
                }
            }
            return channel
        } catch let error as RedisError {
            throw error
        } catch ChannelError.connectTimeout {
            logger.debug(
                "Redis connect timed out",
                metadata: ["host": "\(configuration.host)", "port": "\(configuration.port)"]
            )
            throw RedisError.timeout
        } catch {
            logger.debug(
                "Redis connect failed",
                metadata: ["host": "\(configuration.host)", "port": "\(configuration.port)", "error": "\(error)"]
            )
            throw RedisError.notConnected
        }
    }

    /// The TLS context of `rediss://`: the system's trust store or `caFile`, the client certificate if given.
    /// Made per connection (a node opens two, and reopens them only after a drop), so a renewed CA file is read.
    private static func tlsContext(_ settings: RedisConfiguration.TLS, logger: Logger) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            if let caFile = settings.caFile {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            }
            if let certificateFile = settings.certificateFile, let keyFile = settings.keyFile {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            }
            if !settings.verifiesServer { tls.certificateVerification = .none }
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw RedisError.tls("cannot set up TLS: \(error)")
        }
    }

    /// Sends AUTH, SELECT and CLIENT SETNAME (those that apply) pipelined; closes the channel and throws on failure.
    /// Throws `.timeout` when not done by `deadline`.
    static func handshake(
        channel: any Channel,
        configuration: RedisConfiguration,
        name: String?,
        deadline: NIODeadline
    ) async throws {
        var commands: [[RedisArgument]] = []
        if let password = configuration.password {
            if let username = configuration.username {
                commands.append(["AUTH", .string(username), .string(password)])
            } else {
                commands.append(["AUTH", .string(password)])
            }
        }
        if configuration.database != 0 {
            commands.append(["SELECT", .int(configuration.database)])
        }
        if let name {
            commands.append(["CLIENT", "SETNAME", .string(name)])
        }
        guard !commands.isEmpty else { return }

        let timeout = channel.eventLoop.scheduleTask(deadline: deadline) {
            channel.close(promise: nil)
        }
        defer { timeout.cancel() }
        let replies = commands.map { channel.sendRedisCommand($0) }
        do {
            for reply in replies {
                if case .error(let message) = try await reply.get() {
                    throw RedisError.server(message)
                }
            }
        } catch {
            channel.close(promise: nil)
            if case RedisError.server = error { throw error }
            throw NIODeadline.now() >= deadline ? RedisError.timeout : RedisError.connectionClosed
        }
    }
}
