import NIOCore

/// Notices a client that hung up while its stream is open. Hummingbird allows half-closed connections, so a
/// client's FIN does not close the channel: it only arrives as `inputClosed`, which nobody reads while a
/// response is streaming. An SSE client never sends anything after its request, so end of input means gone.
final class ClientHangupObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let onHangup: @Sendable () -> Void

    init(onHangup: @escaping @Sendable () -> Void) {
        self.onHangup = onHangup
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            onHangup()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        onHangup()
        context.fireChannelInactive()
    }

    /// Installs an observer at the head of `channel`'s pipeline; it stays until the channel closes.
    static func install(on channel: any Channel, onHangup: @escaping @Sendable () -> Void) async throws {
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.addHandler(ClientHangupObserver(onHangup: onHangup), position: .first)
        }.get()
    }
}
