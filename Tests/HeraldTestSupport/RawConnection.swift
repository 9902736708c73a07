// A bare TCP connection for tests of the HTTP layer itself: it sends exactly the bytes it is given (partial heads,
// smuggling attempts, pipelined requests) and records every byte that comes back and when the server closes.

import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

public final class RawConnection: Sendable {
    private let channel: any Channel
    private let state: NIOLockedValueBox<[UInt8]>

    private init(channel: any Channel, state: NIOLockedValueBox<[UInt8]>) {
        self.channel = channel
        self.state = state
    }

    /// Connects to `host:port` and sends nothing. `receiveBufferSize` (SO_RCVBUF) makes a deliberately slow reader
    /// together with `stopReading()`.
    public static func open(
        host: String = "127.0.0.1", port: Int, receiveBufferSize: Int? = nil, timeout: Duration = .seconds(10)
    ) async throws -> RawConnection {
        let state = NIOLockedValueBox<[UInt8]>([])
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        if let receiveBufferSize {
            bootstrap = bootstrap.channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBufferSize))
        }
        let channel = try await bootstrap
            .connectTimeout(TimeAmount(timeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteRecorder(state: state))
                }
            }
            .connect(host: host, port: port)
            .get()
        return RawConnection(channel: channel, state: state)
    }

    /// Writes `text` (UTF-8) as it is.
    public func send(_ text: String) async throws {
        try await send(Array(text.utf8))
    }

    public func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes)).get()
    }

    /// Every byte received so far, as text.
    public var received: String { String(decoding: state.withLockedValue { $0 }, as: UTF8.self) }

    /// The server closed the connection (or reset it).
    public var isClosed: Bool { !channel.isActive }

    /// Waits until the server has closed the connection; false if it is still open after `timeout`.
    public func waitForClose(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if isClosed { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return isClosed
    }

    /// Waits until the bytes received contain `text`; false if they do not after `timeout`.
    public func waitForReceived(containing text: String, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if received.contains(text) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return received.contains(text)
    }

    /// Reads nothing more: the kernel's buffers fill and the server's writes back up.
    public func stopReading() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: false).get()
    }

    public func resumeReading() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: true).get()
    }

    /// Every byte received so far.
    public var receivedBytes: [UInt8] { state.withLockedValue { $0 } }

    /// Sends FIN and goes on reading: the client hung up as far as the server can tell.
    public func shutdownOutput() async throws {
        try await channel.close(mode: .output).get()
    }

    public func close() async {
        try? await channel.close().get()
    }
}

private final class ByteRecorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let state: NIOLockedValueBox<[UInt8]>

    init(state: NIOLockedValueBox<[UInt8]>) {
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Array(buffer: unwrapInboundIn(data))
        state.withLockedValue { $0 += bytes }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A reset by the server: the connection is over, which is what the tests wait for.
        context.close(promise: nil)
    }
}
