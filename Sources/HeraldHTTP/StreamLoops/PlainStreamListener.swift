import CEpoll
import Glibc
import HeraldCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Herald's public listener for plain HTTP when streams open on the loop (no TLS, no tracing): a listening socket
/// per `StreamLoop` (one per core, sharing the port through `SO_REUSEPORT`, claimed first as `HTTPListener`
/// does), whose connections become event streams with no NIO channel, or, for any other request, NIO channels
/// with the full HTTP pipeline (`LimitedHTTPChannel.adopt`) and the bytes read so far.
///
/// Shutdown as `HTTPListener`'s: on a graceful shutdown it stops accepting, ends every stream (its client
/// reconnects elsewhere), tells every adopted connection to quiesce, and returns once all have closed, or at once
/// if the service is cancelled; its loops stop then.
struct PlainStreamListener: Service {
    let connections: LimitedHTTPChannel
    let runner: RequestHandoff.Runner
    let host: String
    let port: Int
    let loopCount: Int
    /// Where adopted connections go.
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger

    /// What every loop's connections share.
    struct Shared: Sendable {
        let runner: RequestHandoff.Runner
        let gate: ConnectionGate
        let limits: ConnectionLimits
        let adoption: Adoption
    }

    func run() async throws {
        var loops: [StreamLoop] = []
        do {
            for index in 0..<max(loopCount, 1) { loops.append(try StreamLoop(name: "stream-loop-\(index)")) }
            try await serve(on: loops)
        } catch {
            await Self.stop(loops)
            throw error
        }
        await Self.stop(loops)
    }

    /// Listens on every loop and serves until the node shuts down.
    private func serve(on loops: [StreamLoop]) async throws {
        if port != 0 { try await HTTPListener.claim(host: host, port: port, on: eventLoopGroup.any()) }
        var sockets = [try Self.listen(on: try SocketAddress.makeAddressResolvingHost(host, port: port))]
        let boundPort: Int
        do {
            boundPort = try Self.port(of: sockets[0])
            let bound = try SocketAddress.makeAddressResolvingHost(host, port: boundPort)
            while sockets.count < loops.count { sockets.append(try Self.listen(on: bound)) }
        } catch {
            for socket in sockets { Glibc.close(socket) }
            throw error
        }
        let adoption = Adoption(connections: connections, group: eventLoopGroup, logger: logger)
        let shared = Shared(runner: runner, gate: connections.gate, limits: connections.limits, adoption: adoption)
        var started: [(StreamLoop, NIOLoopBound<PlainConnections>)] = []
        do {
            for (loop, socket) in zip(loops, sockets) {
                let connections = try await loop.submit {
                    let connections = PlainConnections(loop: loop, listener: socket, shared: shared)
                    try connections.start()
                    return NIOLoopBound(connections, eventLoop: loop)
                }.get()
                started.append((loop, connections))
            }
        } catch {
            // The started loops' sockets close with their loops.
            for socket in sockets.dropFirst(started.count) { Glibc.close(socket) }
            throw error
        }
        logger.info("Server started and listening on \(host):\(boundPort)")
        let allClosed = eventLoopGroup.any().makePromise(of: Void.self)
        try await HTTPListener.wait(for: allClosed) { [started] in
            var closed = started.map { loop, connections in loop.flatSubmit { connections.value.quiesce() } }
            closed.append(adoption.quiesce())
            allClosed.completeWith(EventLoopFuture.andAllComplete(closed, on: allClosed.futureResult.eventLoop))
        }
    }

    private static func stop(_ loops: [StreamLoop]) async {
        for loop in loops { try? await loop.shutdownGracefully() }
    }

    /// A non-blocking listening socket on `address`, sharing its port with the node's other loops. Its connections
    /// inherit `TCP_NODELAY` (a frame goes out when written, as on NIO's channels) without a call each.
    private static func listen(on address: SocketAddress) throws -> Int32 {
        let socket = Glibc.socket(
            address.protocol.rawValue, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0
        )
        guard socket >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        var on: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        guard setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &on, size) == 0,
              setsockopt(socket, SOL_SOCKET, SO_REUSEPORT, &on, size) == 0,
              setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &on, size) == 0,
              address.withSockAddr({ Glibc.bind(socket, $0, socklen_t($1)) }) == 0,
              Glibc.listen(socket, 256) == 0
        else {
            let error = IOError(errnoCode: errno, reason: "listen on \(address)")
            Glibc.close(socket)
            throw error
        }
        return socket
    }

    private static func port(of socket: Int32) throws -> Int {
        let port = cepoll_local_port(socket)
        guard port >= 0 else { throw IOError(errnoCode: errno, reason: "getsockname") }
        return Int(port)
    }

    /// Connections a `StreamLoop` accepted and NIO serves: each gets a channel on NIO's loops with the full HTTP
    /// pipeline, is read first what the stream loop read of it, and is told to quiesce at shutdown like a
    /// connection NIO's own listener accepted.
    final class Adoption: Sendable {
        private struct Adopted {
            var channels: [ObjectIdentifier: any Channel] = [:]
            var quiescing = false
        }

        private let connections: LimitedHTTPChannel
        private let group: any EventLoopGroup
        private let logger: Logger
        private let adopted = NIOLockedValueBox(Adopted())

        init(connections: LimitedHTTPChannel, group: any EventLoopGroup, logger: Logger) {
            self.connections = connections
            self.group = group
            self.logger = logger
        }

        /// NIO takes `socket` (admitted as `admission`; its slot is given back when the channel closes), and with it
        /// `claim`, its stream request's claim of the thread's opening, released when the channel closes.
        func adopt(
            _ socket: Int32, read: ByteBuffer, admission: ConnectionGate.Admission, headDue: NIODeadline, claim: ThreadOpenings.Claim?
        ) {
            let connections = self.connections
            let logger = self.logger
            ClientBootstrap(group: group)
                .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let claim { channel.closeFuture.whenComplete { _ in claim.release() } }
                        try channel.pipeline.syncOperations.addHandler(ReadAlready(read))
                        let connection = try connections.adopt(channel: channel, admission: admission, firstHeadDue: headDue, logger: logger)
                        self.track(channel)
                        connections.serveWhenNeeded(connection, logger: logger)
                    }
                }
                .withConnectedSocket(socket)
                .whenFailure { error in
                    claim?.release()
                    logger.warning("a connection could not be handed to NIO", metadata: ["error": "\(error)"])
                }
        }

        private func track(_ channel: any Channel) {
            let key = ObjectIdentifier(channel)
            let quiescing = adopted.withLockedValue { adopted in
                adopted.channels[key] = channel
                return adopted.quiescing
            }
            channel.closeFuture.whenComplete { _ in self.adopted.withLockedValue { _ = $0.channels.removeValue(forKey: key) } }
            if quiescing { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
        }

        /// Tells every adopted connection to quiesce; the future completes once they have all closed.
        func quiesce() -> EventLoopFuture<Void> {
            let channels = adopted.withLockedValue { adopted in
                adopted.quiescing = true
                return Array(adopted.channels.values)
            }
            for channel in channels { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
            return EventLoopFuture.andAllComplete(channels.map(\.closeFuture), on: group.any())
        }
    }
}

/// First in an adopted connection's pipeline: hands on what was read of the connection before it had one, as its
/// first read once it is active, and leaves.
private final class ReadAlready: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let bytes: ByteBuffer

    init(_ bytes: ByteBuffer) {
        self.bytes = bytes
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if bytes.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
