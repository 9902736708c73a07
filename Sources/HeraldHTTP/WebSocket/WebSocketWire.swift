import NIOCore
import NIOWebSocket

/// Server-to-client WebSocket frames as bytes (RFC 6455 §5.2: a server's frames are never masked). A frame's
/// bytes are the same for every client, which is what lets a live event be framed once per event loop and
/// written as it is to every socket there (`OutgoingFrame.encoded(for:)`).
enum WebSocketWire {
    /// Text frames, one per message, back to back in one buffer.
    static func textFrames(_ messages: [[UInt8]]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(messages.reduce(0) { $0 + $1.count + 10 })
        for message in messages {
            writeHeader(opcode: .text, length: message.count, to: &buffer)
            buffer.writeBytes(message)
        }
        return buffer
    }

    static func text(_ message: [UInt8]) -> ByteBuffer { textFrames([message]) }

    static func ping() -> ByteBuffer { control(.ping, ByteBuffer()) }

    static func pong(echoing data: ByteBuffer) -> ByteBuffer { control(.pong, data) }

    /// A close frame with its status code and a reason (control frames carry at most 125 bytes).
    static func close(_ code: WebSocketErrorCode, reason: String) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.write(webSocketErrorCode: code)
        payload.writeBytes(reason.utf8.prefix(123))
        return control(.connectionClose, payload)
    }

    private static func control(_ opcode: WebSocketOpcode, _ payload: ByteBuffer) -> ByteBuffer {
        var buffer = ByteBuffer()
        writeHeader(opcode: opcode, length: payload.readableBytes, to: &buffer)
        buffer.writeImmutableBuffer(payload)
        return buffer
    }

    /// FIN set, no mask, the length in 7, 7+16 or 7+64 bits.
    private static func writeHeader(opcode: WebSocketOpcode, length: Int, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(0x80) | UInt8(webSocketOpcode: opcode))
        switch length {
        case ..<126:
            buffer.writeInteger(UInt8(length))
        case ..<65536:
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
    }
}
