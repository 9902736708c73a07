import HeraldCore
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP2

/// A stream's way onto its client's connection: the hub writes frames here, on the channel's event loop, and
/// they go to the socket as they are, in the response's framing (HTTP/1.1 chunks, made once per frame per loop and
/// shared by every client there), without a task, an async writer or an HTTP part per client.
///
/// It sits right after the response encoder, where it sees Hummingbird's (or `RequestHandoff`'s) response head go
/// by: bytes written before that are held until it has. After it, frames are written below the encoder,
/// through the encoder's own context, already framed as the encoder would have framed them (it chunks a
/// response of unknown length to HTTP/1.1, and leaves HTTP/1.0's as they are, ended by the close). On a
/// connection with no HTTP handlers (`LeanStreamHandler`'s) it is last in the pipeline, and writes chunks through
/// its own context once told the head is out. It also
/// notices a client that hung up: Hummingbird allows half-closed connections, so a client's FIN arrives only as
/// `inputClosed`, which nobody reads while a response streams; an SSE client never sends anything after its
/// request, so end of input means gone.
final class StreamOutlet: ChannelDuplexHandler, StreamSink {
    typealias InboundIn = NIOAny
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let connection: StreamConnection
    private var context: ChannelHandlerContext?
    /// Where framed bytes go once the head has passed: the encoder's context, whose writes skip the encoder.
    private var wire: ChannelHandlerContext?
    private var chunked = false
    private var held: [OutgoingFrame] = []
    /// The channel's writability, kept from its events: asked for every frame, cheaper than asking the channel.
    private var writable = true

    private init(connection: StreamConnection) {
        self.connection = connection
    }

    /// Adds an outlet for `connection` to `channel`'s pipeline, for HTTP/1.1 or for an HTTP/2 stream (an
    /// `HTTP2StreamOutlet`); on the channel's event loop.
    static func install(for connection: StreamConnection, on channel: any Channel) throws -> any StreamSink {
        let pipeline = channel.pipeline.syncOperations
        if let codec = try? pipeline.handler(type: HTTP2FramePayloadToHTTPServerCodec.self) {
            let outlet = HTTP2StreamOutlet(connection: connection)
            try pipeline.addHandler(outlet, position: .after(codec))
            return outlet
        }
        let outlet = StreamOutlet(connection: connection)
        if let encoder = try? pipeline.handler(type: HTTPResponseEncoder.self) {
            try pipeline.addHandler(outlet, position: .after(encoder))
        } else {
            // A connection with no HTTP handlers: `LeanStreamHandler` writes the head, then calls `headWritten()`.
            try pipeline.addHandler(outlet)
        }
        return outlet
    }

    /// `install` on `channel`, as `StreamRoute.openNow` takes it.
    static func attacher(_ channel: any Channel) -> (StreamConnection) throws -> any StreamSink {
        { try install(for: $0, on: channel) }
    }

    /// The response head has gone out below this outlet, on a connection with no HTTP encoder (`LeanStreamHandler`
    /// wrote it, for HTTP/1.1): frames are written chunked through the outlet's own context from now on.
    func headWritten() {
        guard let context, wire == nil else { return }
        chunked = true
        wire = context
        for frame in held { write(frame) }
        held = []
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        writable = context.channel.isWritable
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        wire = nil
    }

    // MARK: StreamSink

    var isWritable: Bool { writable && context != nil }

    func write(_ frame: OutgoingFrame) {
        guard let wire else {
            held.append(frame)
            return
        }
        wire.write(NIOAny(framed(frame)), promise: nil)
    }

    func flush() {
        wire?.flush()
    }

    func writeAndFlush(_ frame: OutgoingFrame) {
        guard let wire else {
            held.append(frame)
            return
        }
        wire.writeAndFlush(NIOAny(framed(frame)), promise: nil)
    }

    /// The frame as this response frames it: an HTTP/1.1 chunk (made once per loop for every stream there), or
    /// as it is.
    private func framed(_ frame: OutgoingFrame) -> ByteBuffer {
        chunked ? frame.encoded(for: ObjectIdentifier(HTTPChunk.self), HTTPChunk.chunk) : frame.bytes
    }

    func close() {
        context?.close(promise: nil)
    }

    // MARK: ChannelDuplexHandler

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        context.write(data, promise: promise)
        guard wire == nil, case .head(let head) = part else { return }
        // The response of unknown length this outlet writes: chunked from HTTP/1.1 on, as the encoder does.
        chunked = head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1)
        // Present: `install` put the outlet right after it.
        guard let encoder = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self) else {
            context.close(promise: nil)
            return
        }
        wire = encoder
        for frame in held { write(frame) }
        held = []
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        if writable { connection.sinkBecameWritable() }
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

/// The outlet of a stream on an HTTP/2 stream: it sits right above the HTTP/2 codec, holds frames until the
/// response head has passed, then writes each as a body part, which the codec sends as a DATA frame (no chunked
/// framing in HTTP/2). The stream channel's writability is its flow-control window, so a client that stops
/// reading one stream makes that stream, not the connection, fall behind; a reset (RST_STREAM) closes the stream
/// channel, which ends the stream.
final class HTTP2StreamOutlet: ChannelDuplexHandler, StreamSink {
    typealias InboundIn = NIOAny
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let connection: StreamConnection
    private var context: ChannelHandlerContext?
    private var headSent = false
    private var held: [OutgoingFrame] = []
    private var writable = true

    init(connection: StreamConnection) {
        self.connection = connection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        writable = context.channel.isWritable
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    var isWritable: Bool { writable && context != nil }

    func write(_ frame: OutgoingFrame) {
        guard headSent, let context else {
            held.append(frame)
            return
        }
        context.write(wrapOutboundOut(.body(frame.bytes)), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    func close() {
        context?.close(promise: nil)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
        guard !headSent, case .head = unwrapOutboundIn(data) else { return }
        headSent = true
        for frame in held { write(frame) }
        held = []
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        if writable { connection.sinkBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.end(.clientGone)
        context.fireChannelInactive()
    }
}
