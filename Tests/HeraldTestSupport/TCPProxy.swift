import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP proxy on loopback that forwards every connection to one target port and can cut all of them at once
/// (how a test makes a long-lived connection, an engine stream say, drop mid-transfer) or hold what they send
/// (how a test makes a service answer late).
public final class TCPProxy: Sendable {
    public let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let listener: any Channel
    private let state: NIOLockedValueBox<State>

    private struct State {
        /// Both ends of every proxied connection still open.
        var connections: [ObjectIdentifier: any Channel] = [:]
        /// Nothing is read from either end (so nothing forwarded) until `release()`.
        var holding = false
    }

    public static func start(forwardingTo targetPort: Int) async throws -> TCPProxy {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let state = NIOLockedValueBox(State())
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                // The upstream connection is made before the client's channel is registered, so nothing the client
                // sends is read before there is somewhere to forward it.
                ClientBootstrap(group: inbound.eventLoop).connect(host: "127.0.0.1", port: targetPort).flatMapThrowing { outbound in
                    try inbound.pipeline.syncOperations.addHandler(Forwarder(to: outbound))
                    try outbound.pipeline.syncOperations.addHandler(Forwarder(to: inbound))
                    let holding = state.withLockedValue { current in
                        for channel in [inbound, outbound] {
                            let key = ObjectIdentifier(channel)
                            current.connections[key] = channel
                            channel.closeFuture.whenComplete { _ in _ = state.withLockedValue { $0.connections.removeValue(forKey: key) } }
                        }
                        return current.holding
                    }
                    if holding {
                        try inbound.syncOptions?.setOption(.autoRead, value: false)
                        try outbound.syncOptions?.setOption(.autoRead, value: false)
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TCPProxy(port: listener.localAddress?.port ?? 0, group: group, listener: listener, state: state)
    }

    private init(port: Int, group: MultiThreadedEventLoopGroup, listener: any Channel, state: NIOLockedValueBox<State>) {
        self.port = port
        self.group = group
        self.listener = listener
        self.state = state
    }

    /// Stops forwarding, on every connection and on those accepted meanwhile: what either end sends waits.
    public func hold() async {
        await setReading(false)
    }

    /// Forwards again, what waited first.
    public func release() async {
        await setReading(true)
    }

    private func setReading(_ reading: Bool) async {
        let channels = state.withLockedValue { state in
            state.holding = !reading
            return Array(state.connections.values)
        }
        for channel in channels {
            // One that closed meanwhile has nothing to hold.
            try? await channel.setOption(.autoRead, value: reading).get()
        }
    }

    /// Connections currently proxied (each counts once).
    public var openConnections: Int { state.withLockedValue { $0.connections.count } / 2 }

    /// Closes both ends of every proxied connection; new connections are still accepted.
    public func cutAll() {
        for channel in state.withLockedValue({ Array($0.connections.values) }) {
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
