import HeraldCore
import NIOCore
import NIOHTTP1

/// A stream's way onto its client's connection: the hub writes frames here, on the channel's event loop, as
/// HTTP body parts that only the HTTP/1.1 encoder (chunked framing) still touches, so the shared frame buffers
/// reach the socket without a task, an async writer or a copy per client.
///
/// It sits right after the response encoder. Bytes written before Hummingbird's response head has passed are
/// held until it does, so the stream can begin before the route returns its response. It also notices a client
/// that hung up: Hummingbird allows half-closed connections, so a client's FIN arrives only as `inputClosed`,
/// which nobody reads while a response streams; an SSE client never sends anything after its request, so end
/// of input means gone.
final class StreamOutlet: ChannelDuplexHandler, StreamSink {
    typealias InboundIn = NIOAny
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let connection: StreamConnection
    private var context: ChannelHandlerContext?
    private var headPassed = false
    private var held: [ByteBuffer] = []

    private init(connection: StreamConnection) {
        self.connection = connection
    }

    /// Adds an outlet for `connection` to `channel`'s pipeline; on the channel's event loop.
    static func install(for connection: StreamConnection, on channel: any Channel) throws -> StreamOutlet {
        let outlet = StreamOutlet(connection: connection)
        let pipeline = channel.pipeline.syncOperations
        try pipeline.addHandler(outlet, position: .after(try pipeline.handler(type: HTTPResponseEncoder.self)))
        return outlet
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: StreamSink

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func write(_ buffer: ByteBuffer) {
        guard let context else { return }
        if headPassed {
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        } else {
            held.append(buffer)
        }
    }

    func flush() {
        guard headPassed else { return }
        context?.flush()
    }

    func close() {
        context?.close(promise: nil)
    }

    // MARK: ChannelDuplexHandler

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let isHead = if case .head = unwrapOutboundIn(data) { true } else { false }
        context.write(data, promise: promise)
        guard isHead, !headPassed else { return }
        headPassed = true
        for buffer in held {
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        held = []
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { connection.sinkBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            connection.end(.clientGone)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.end(.clientGone)
        context.fireChannelInactive()
    }
}
