import Foundation
import NIOCore

/// Builds SSE frame bytes. A frame body is `event: NAME\ndata: JSON\n\n`; the `id:` line is prepended by the
/// publish script (live) or by the replay (catch-up), because only Redis knows the id.
public enum FrameEncoder {
    public static let preamble = "retry: 3000\n: connected\n\n"
    public static let heartbeat = ": heartbeat\n\n"

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return encoder
    }()

    /// The frame body of `event`. JSON from `JSONEncoder` escapes control characters inside strings, so `data`
    /// is always a single line and no content can start a new SSE field.
    public static func body(of event: StreamEvent) -> [UInt8] {
        let json: Data
        do {
            json = switch event {
            case .messageUpdate(let payload): try encoder.encode(payload)
            case .delta(let payload): try encoder.encode(payload)
            case .runStatus(let payload): try encoder.encode(payload)
            case .error(let payload): try encoder.encode(payload)
            case .threadDeleted(let payload): try encoder.encode(payload)
            case .resync(let payload): try encoder.encode(payload)
            }
        } catch {
            // Every payload is a tree of strings, numbers and UUIDs: encoding cannot fail.
            preconditionFailure("stream event failed to encode: \(error)")
        }
        return body(eventName: event.name.rawValue, json: json)
    }

    static func body(eventName: String, json: some Collection<UInt8>) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(json.count + eventName.utf8.count + 16)
        bytes.append(contentsOf: "event: ".utf8)
        bytes.append(contentsOf: eventName.utf8)
        bytes.append(contentsOf: "\ndata: ".utf8)
        bytes.append(contentsOf: json)
        bytes.append(contentsOf: "\n\n".utf8)
        return bytes
    }

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
            let prefix: [UInt8] = Array("id: ".utf8)
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
