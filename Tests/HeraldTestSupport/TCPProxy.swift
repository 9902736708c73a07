import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP proxy on loopback that forwards every connection to one target port and can cut all of them at once:
/// how a test makes a long-lived connection (an engine stream, say) drop mid-transfer.
public final class TCPProxy: Sendable {
    public let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let listener: any Channel
    /// Both ends of every proxied connection still open.
    private let connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>

    public static func start(forwardingTo targetPort: Int) async throws -> TCPProxy {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let connections = NIOLockedValueBox([ObjectIdentifier: any Channel]())
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                // The upstream connection is made before the client's channel is registered, so nothing the client
                // sends is read before there is somewhere to forward it.
                ClientBootstrap(group: inbound.eventLoop).connect(host: "127.0.0.1", port: targetPort).flatMapThrowing { outbound in
                    try inbound.pipeline.syncOperations.addHandler(Forwarder(to: outbound))
                    try outbound.pipeline.syncOperations.addHandler(Forwarder(to: inbound))
                    connections.withLockedValue { open in
                        for channel in [inbound, outbound] {
                            let key = ObjectIdentifier(channel)
                            open[key] = channel
                            channel.closeFuture.whenComplete { _ in _ = connections.withLockedValue { $0.removeValue(forKey: key) } }
                        }
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TCPProxy(port: listener.localAddress?.port ?? 0, group: group, listener: listener, connections: connections)
    }

    private init(port: Int, group: MultiThreadedEventLoopGroup, listener: any Channel, connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>) {
        self.port = port
        self.group = group
        self.listener = listener
        self.connections = connections
    }

    /// Connections currently proxied (each counts once).
    public var openConnections: Int { connections.withLockedValue { $0.count } / 2 }

    /// Closes both ends of every proxied connection; new connections are still accepted.
    public func cutAll() {
        for channel in connections.withLockedValue({ Array($0.values) }) {
            channel.close(promise: nil)
        }
    }

    public func stop() async throws {
        cutAll()
        try await listener.close()
        try await group.shutdownGracefully()
    }
}

/// Writes what one side reads to the other, and closes the other side when this one closes.
private final class Forwarder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let peer: any Channel

    init(to peer: any Channel) {
        self.peer = peer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        peer.writeAndFlush(unwrapInboundIn(data), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
        context.fireChannelInactive()
    }
}
