import NIOCore

/// What a stream writes: frame bytes, and their encoding for the client's transport, made by the first stream on
/// the loop that needs it and shared by every other (an HTTP/1.1 chunk, a WebSocket message: one per frame per
/// loop and transport, not per client).
///
/// A live frame gets one per event loop, created where the loop delivers it; it never leaves that loop, which is
/// why it needs no lock and is not `Sendable`.
public final class OutgoingFrame {
    public let bytes: ByteBuffer
    /// The frame's stream id, parsed once for every stream; nil for what is not a logged frame.
    let id: StreamID?
    /// Room for the two transports a loop serves at once (HTTP/1.1 streams and WebSockets).
    private var encoding: (transport: ObjectIdentifier, bytes: ByteBuffer)?
    private var otherEncoding: (transport: ObjectIdentifier, bytes: ByteBuffer)?

    init(_ bytes: ByteBuffer, id: StreamID?) {
        self.bytes = bytes
        self.id = id
    }

    /// `bytes` as `transport` puts them on the wire, made by `encode` once.
    public func encoded(for transport: ObjectIdentifier, _ encode: (ByteBuffer) -> ByteBuffer) -> ByteBuffer {
        if let encoding, encoding.transport == transport { return encoding.bytes }
        if let otherEncoding, otherEncoding.transport == transport { return otherEncoding.bytes }
        let bytes = encode(self.bytes)
        if encoding == nil {
            encoding = (transport, bytes)
        } else {
            otherEncoding = (transport, bytes)
        }
        return bytes
    }
}
