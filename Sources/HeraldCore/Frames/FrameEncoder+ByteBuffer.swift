import NIOCore

/// Complete frames (`id:` line + body) as ByteBuffers, and reading them back.
extension FrameEncoder {
    /// A complete frame: `id: ID\n` followed by the body, as the publish script builds it.
    public static func frame(id: String, body: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: id.utf8.count + 5 + body.readableBytes)
        buffer.writeString("id: ")
        buffer.writeString(id)
        buffer.writeString("\n")
        buffer.writeImmutableBuffer(body)
        return buffer
    }

    /// The stream id of a complete frame: the value of its first line when that line is `id: …`.
    public static func frameID(of frame: ByteBuffer) -> StreamID? {
        frame.withUnsafeReadableBytes { bytes -> StreamID? in
            // Runs once per subscriber per frame: no allocation on this path.
            let prefix = "id: ".utf8
            guard bytes.count > prefix.count, bytes.starts(with: prefix) else { return nil }
            guard let newline = bytes[prefix.count...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            return StreamID(bytes: bytes[prefix.count..<newline])
        }
    }

    /// The event name of a complete frame (its `event:` line), without decoding the data.
    public static func eventName(of frame: ByteBuffer) -> Substring? {
        frame.withUnsafeReadableBytes { bytes -> Substring? in
            var lineStart = 0
            while lineStart < bytes.count {
                let lineEnd = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
                let line = bytes[lineStart..<lineEnd]
                if line.starts(with: "event: ".utf8) {
                    return Substring(decoding: line.dropFirst(7), as: UTF8.self)
                }
                if line.isEmpty { return nil }
                lineStart = lineEnd + 1
            }
            return nil
        }
    }
}
