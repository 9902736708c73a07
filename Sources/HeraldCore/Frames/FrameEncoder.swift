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
        // Deltas come once per token, and every delta script carries its run's `running` frame: their JSON is
        // written directly, in the same bytes `JSONEncoder` writes.
        if case .delta(let delta) = event { return body(eventName: event.name.rawValue, json: json(of: delta)) }
        if case .runStatus(let update) = event { return body(eventName: event.name.rawValue, json: json(of: update)) }
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

    /// `{"cached":…,"delta":…,"index":…,"message_id":…,"run_id":…,"thread_id":…}`: the sorted keys of
    /// `StreamEvent.Delta`, `cached` only when set.
    static func json(of delta: StreamEvent.Delta) -> [UInt8] {
        var json = jsonBeforeIndex(of: delta)
        json.append(contentsOf: String(delta.index).utf8)
        appendJSONAfterIndex(of: delta, to: &json)
        return json
    }

    /// A delta's frame body without its index, whose digits go between the two: the delta script fills in an index
    /// it assigns itself.
    public static func deltaBody(aroundIndexOf delta: StreamEvent.Delta) -> (beforeIndex: [UInt8], afterIndex: [UInt8]) {
        var before = Array("event: \(StreamEventName.delta.rawValue)\ndata: ".utf8)
        before.append(contentsOf: jsonBeforeIndex(of: delta))
        var after: [UInt8] = []
        after.reserveCapacity(128)
        appendJSONAfterIndex(of: delta, to: &after)
        after.append(contentsOf: "\n\n".utf8)
        return (before, after)
    }

    private static func jsonBeforeIndex(of delta: StreamEvent.Delta) -> [UInt8] {
        var json: [UInt8] = []
        json.reserveCapacity(delta.delta.utf8.count + 176)
        openObject(cached: delta.cached, firstKey: "delta", in: &json)
        appendJSONString(delta.delta, to: &json)
        json.append(contentsOf: #","index":"#.utf8)
        return json
    }

    private static func appendJSONAfterIndex(of delta: StreamEvent.Delta, to json: inout [UInt8]) {
        json.append(contentsOf: #","message_id":""#.utf8)
        json.append(contentsOf: delta.messageID.text.utf8)
        json.append(contentsOf: #"","run_id":""#.utf8)
        json.append(contentsOf: delta.runID.text.utf8)
        json.append(contentsOf: #"","thread_id":""#.utf8)
        json.append(contentsOf: delta.threadID.text.utf8)
        json.append(contentsOf: #""}"#.utf8)
    }

    /// `{"cached":…,"run_id":…,"status":…,"thread_id":…}`: the sorted keys of `StreamEvent.RunStatusUpdate`,
    /// `cached` only when set (a status is a plain word: nothing to escape).
    static func json(of update: StreamEvent.RunStatusUpdate) -> [UInt8] {
        var json: [UInt8] = []
        json.reserveCapacity(112)
        openObject(cached: update.cached, firstKey: "run_id", in: &json)
        json.append(UInt8(ascii: "\""))
        json.append(contentsOf: update.runID.text.utf8)
        json.append(contentsOf: #"","status":""#.utf8)
        json.append(contentsOf: update.status.rawValue.utf8)
        json.append(contentsOf: #"","thread_id":""#.utf8)
        json.append(contentsOf: update.threadID.text.utf8)
        json.append(contentsOf: #""}"#.utf8)
        return json
    }

    /// `{`, then `"cached":true,` or `"cached":false,` when it is set (it sorts first), then `"<firstKey>":`.
    private static func openObject(cached: Bool?, firstKey: String, in json: inout [UInt8]) {
        json.append(UInt8(ascii: "{"))
        if let cached { json.append(contentsOf: (cached ? #""cached":true,"# : #""cached":false,"#).utf8) }
        json.append(UInt8(ascii: "\""))
        json.append(contentsOf: firstKey.utf8)
        json.append(contentsOf: #"":"#.utf8)
    }

    /// A JSON string as `JSONEncoder` writes it with `.withoutEscapingSlashes`: quote and backslash escaped, the
    /// control characters as `\b \f \n \r \t` or `\u00XX`, everything else as UTF-8.
    static func appendJSONString(_ text: String, to json: inout [UInt8]) {
        let hex: StaticString = "0123456789abcdef"
        json.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): json.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): json.append(contentsOf: #"\\"#.utf8)
            case 0x08: json.append(contentsOf: #"\b"#.utf8)
            case 0x0C: json.append(contentsOf: #"\f"#.utf8)
            case UInt8(ascii: "\n"): json.append(contentsOf: #"\n"#.utf8)
            case UInt8(ascii: "\r"): json.append(contentsOf: #"\r"#.utf8)
            case UInt8(ascii: "\t"): json.append(contentsOf: #"\t"#.utf8)
            case 0x00..<0x20:
                json.append(contentsOf: #"\u00"#.utf8)
                json.append(hex.utf8Start[Int(byte >> 4)])
                json.append(hex.utf8Start[Int(byte & 0x0f)])
            default: json.append(byte)
            }
        }
        json.append(UInt8(ascii: "\""))
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
