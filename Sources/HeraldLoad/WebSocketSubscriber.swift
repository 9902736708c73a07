import Glibc
import NIOCore

/// Herald's WebSocket (`GET /ws`) subscribed to one thread: the handshake and the frames by hand (a client's frames
/// masked, the server's not), so that what is measured is the server, not a client library. Ready once the server
/// answers `subscribed`; every `event` message of `event` `delta` is counted like an SSE delta frame.
/// Lives on its channel's event loop; all state is confined there.
final class WebSocketSubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let thread: String
    private let host: String
    private let headers: [(String, String)]
    private let tally: TallyBox
    private let connected: EventLoopPromise<Void>
    private var upgraded = false
    private var pending = ByteBuffer()

    init(thread: String, host: String, headers: [(String, String)], tally: TallyBox, connected: EventLoopPromise<Void>) {
        self.thread = thread
        self.host = host
        self.headers = headers
        self.tally = tally
        self.connected = connected
    }

    func channelActive(context: ChannelHandlerContext) {
        var request = "GET /ws HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: bG9hZC10b29sLWtleS0xMg==\r\nSec-WebSocket-Version: 13\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: request + "\r\n")), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = Now.nanos()
        var chunk = unwrapInboundIn(data)
        pending.writeBuffer(&chunk)
        if !upgraded {
            guard let headEnd = pending.readableBytesView.firstRange(of: "\r\n\r\n".utf8) else { return }
            let head = pending.readString(length: headEnd.upperBound - pending.readerIndex) ?? ""
            guard head.hasPrefix("HTTP/1.1 101") else {
                connected.fail(LoadError("GET /ws answered \(head.prefix(12))"))
                context.close(promise: nil)
                return
            }
            upgraded = true
            let subscribe = #"{"type":"subscribe","thread_id":"\#(thread)"}"#
            context.writeAndFlush(wrapOutboundOut(Self.maskedText(Array(subscribe.utf8))), promise: nil)
        }
        consumeFrames(context: context, receivedAt: now)
    }

    func channelInactive(context: ChannelHandlerContext) {
        connected.fail(LoadError("GET /ws: connection closed before `subscribed`"))
        tally.tally.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private static let subscribedType = Array(#""type":"subscribed""#.utf8)
    private static let deltaEvent = Array(#""event":"delta""#.utf8)

    private func consumeFrames(context: ChannelHandlerContext, receivedAt now: UInt64) {
        while let (opcode, payloadStart, payloadLength) = nextFrame() {
            pending.withUnsafeReadableBytes { bytes in
                let payload = UnsafeRawBufferPointer(rebasing: bytes[payloadStart..<payloadStart + payloadLength])
                guard opcode == 0x1 else { return }
                if Bytes.find(Self.deltaEvent, in: payload) != nil {
                    if let delta = DeltaTally.delta(in: payload) {
                        tally.tally.record(index: delta.index, sentNanos: delta.sentNanos, receivedAt: now)
                    } else {
                        tally.tally.malformed += 1
                    }
                } else if Bytes.find(Self.subscribedType, in: payload) != nil {
                    connected.succeed()
                }
            }
            if opcode == 0x9 {
                let data = pending.getSlice(at: pending.readerIndex + payloadStart, length: payloadLength) ?? ByteBuffer()
                context.writeAndFlush(wrapOutboundOut(Self.masked(opcode: 0xA, Array(buffer: data))), promise: nil)
            }
            pending.moveReaderIndex(forwardBy: payloadStart + payloadLength)
        }
        if pending.readableBytes == 0 {
            pending.clear()
        } else if pending.readerIndex > 16 * 1024 {
            pending.discardReadBytes()
        }
    }

    /// The next complete frame in `pending`: its opcode, and where its payload is, relative to the reader index.
    private func nextFrame() -> (opcode: UInt8, payloadStart: Int, payloadLength: Int)? {
        pending.withUnsafeReadableBytes { bytes -> (UInt8, Int, Int)? in
            guard bytes.count >= 2 else { return nil }
            var length = Int(bytes[1] & 0x7F)
            var start = 2
            if length == 126 {
                guard bytes.count >= 4 else { return nil }
                length = Int(bytes[2]) << 8 | Int(bytes[3])
                start = 4
            } else if length == 127 {
                guard bytes.count >= 10 else { return nil }
                length = (2..<10).reduce(0) { $0 << 8 | Int(bytes[$1]) }
                start = 10
            }
            guard bytes.count >= start + length else { return nil }
            return (bytes[0] & 0x0F, start, length)
        }
    }

    private static func maskedText(_ payload: [UInt8]) -> ByteBuffer { masked(opcode: 0x1, payload) }

    /// A client frame (RFC 6455 §5.3: masked), FIN set; control frames and short messages only (< 126 bytes).
    private static func masked(opcode: UInt8, _ payload: [UInt8]) -> ByteBuffer {
        let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        var frame = ByteBuffer()
        frame.writeInteger(0x80 | opcode)
        frame.writeInteger(0x80 | UInt8(payload.count))
        frame.writeBytes(mask)
        frame.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset % 4] })
        return frame
    }
}
