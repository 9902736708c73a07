import Foundation

/// Builds SSE frame bytes. A frame body is `event: NAME\ndata: JSON\n\n`; the `id:` line is prepended by the
/// publish script (live) or by the replay (catch-up), because only Redis knows the id.
///
/// This file needs Foundation only, so the fuzz harness (scripts/fuzz.sh) can compile it on its own; the ByteBuffer
/// helpers are in FrameEncoder+ByteBuffer.swift.
public enum FrameEncoder {
    public static let preamble = "retry: 3000\n: connected\n\n"
    public static let heartbeat = ": heartbeat\n\n"

    /// A heartbeat `EventSource` can see (it never sees comments), for clients that watch for a stale connection
    /// (`?heartbeat=event`). It has no `id:`, so it leaves the client's Last-Event-ID where it was.
    public static func heartbeatEvent(intervalSeconds: Double) -> String {
        "event: heartbeat\ndata: {\"interval_seconds\":\(intervalSeconds)}\n\n"
    }

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
}
