// SSEParser: an incremental parser for `text/event-stream`, written from the WHATWG HTML Living Standard,
// §9.2.6 "Interpreting an event stream". It is independent of Herald's own encoder on purpose:
// tests use it to check what a conforming browser `EventSource` would see.
//
// Deviations from a browser `EventSource`, both additions: comments are reported (as `.comment`)
// rather than dropped, and the last valid `retry` value is kept in `retry` instead of changing a
// reconnection time.

/// One dispatched event, as `MessageEvent` would present it.
public struct SSEEvent: Sendable, Equatable {
    /// The event type: the last `event` field's value, or `"message"` when it was empty or absent.
    public var type: String
    /// The `data` field values joined with LF (one trailing LF removed).
    public var data: String
    /// The event source's last event ID string at dispatch time (persists across events).
    public var lastEventID: String

    public init(type: String = "message", data: String, lastEventID: String = "") {
        self.type = type
        self.data = data
        self.lastEventID = lastEventID
    }
}

/// What a chunk of bytes completed: a dispatched event or a comment line.
public enum SSEItem: Sendable, Equatable {
    case event(SSEEvent)
    /// The text after the leading `:`, with one leading U+0020 SPACE removed (`": heartbeat"` → `"heartbeat"`).
    case comment(String)
}

public struct SSEParser: Sendable {
    /// The last valid `retry` field value (milliseconds), if any was seen.
    public private(set) var retry: Int?
    /// The event source's last event ID string: set from the last event ID buffer on every blank line
    /// (even one that dispatches nothing), and kept across events.
    public private(set) var lastEventID: String = ""

    // Per-stream parsing state.
    private var line: [UInt8] = []
    private var skipNextLF = false  // the previous byte was a CR; a following LF belongs to the same line ending
    private var bomState = BOMState.pending([])

    // The spec's buffers.
    private var dataBuffer = ""
    private var eventTypeBuffer = ""
    private var lastEventIDBuffer = ""

    private enum BOMState: Sendable {
        case pending([UInt8])  // the first bytes of the stream, until they are known to be or not be a BOM
        case done
    }

    private static let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
    private static let lf: UInt8 = 0x0A
    private static let cr: UInt8 = 0x0D
    private static let colon: UInt8 = 0x3A
    private static let space: UInt8 = 0x20

    public init() {}

    /// Feed bytes; returns what the bytes completed, in order. Chunks may be split anywhere
    /// (between CR and LF, inside a UTF-8 sequence, inside the BOM).
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [SSEItem] {
        var items: [SSEItem] = []
        for byte in bytes {
            switch bomState {
            case .done:
                consume(byte, into: &items)
            case .pending(var prefix):
                // "One leading U+FEFF BYTE ORDER MARK character must be ignored if any are present."
                prefix.append(byte)
                if prefix == Self.bom {
                    bomState = .done
                } else if Self.bom.starts(with: prefix) {
                    bomState = .pending(prefix)
                } else {
                    bomState = .done
                    for b in prefix { consume(b, into: &items) }
                }
            }
        }
        return items
    }

    private mutating func consume(_ byte: UInt8, into items: inout [SSEItem]) {
        if skipNextLF {
            skipNextLF = false
            if byte == Self.lf { return }  // the LF of a CRLF pair
        }
        switch byte {
        case Self.cr:
            skipNextLF = true
            endLine(into: &items)
        case Self.lf:
            endLine(into: &items)
        default:
            line.append(byte)
        }
    }

    private mutating func endLine(into items: inout [SSEItem]) {
        let bytes = line
        line.removeAll(keepingCapacity: true)

        // "If the line is empty (a blank line): Dispatch the event."
        if bytes.isEmpty {
            if let event = dispatch() { items.append(.event(event)) }
            return
        }
        // "If the line starts with a U+003A COLON character (:): Ignore the line." (We report it.)
        if bytes[0] == Self.colon {
            var rest = bytes.dropFirst()
            if rest.first == Self.space { rest = rest.dropFirst() }
            items.append(.comment(String(decoding: rest, as: UTF8.self)))
            return
        }
        // Split at the first colon; a line without one is a field name with the empty string as value.
        // (A colon byte never occurs inside a multi-byte UTF-8 sequence, so splitting bytes is safe.)
        let name: String
        let value: String
        if let colonIndex = bytes.firstIndex(of: Self.colon) {
            name = String(decoding: bytes[..<colonIndex], as: UTF8.self)
            var rest = bytes[(colonIndex + 1)...]
            if rest.first == Self.space { rest = rest.dropFirst() }
            value = String(decoding: rest, as: UTF8.self)
        } else {
            name = String(decoding: bytes, as: UTF8.self)
            value = ""
        }
        process(field: name, value: value)
    }

    private mutating func process(field name: String, value: String) {
        switch name {
        case "event":
            eventTypeBuffer = value
        case "data":
            dataBuffer += value
            dataBuffer += "\n"
        case "id":
            // "If the field value does not contain U+0000 NULL, then set the last event ID buffer to the field value."
            if !value.unicodeScalars.contains("\u{0}") { lastEventIDBuffer = value }
        case "retry":
            // "If the field value consists of only ASCII digits, ... set the reconnection time." Otherwise ignore.
            // An empty value, or one too large for Int, is ignored as well.
            if !value.isEmpty, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let milliseconds = Int(value) {
                retry = milliseconds
            }
        default:
            break  // "Otherwise: The field is ignored."
        }
    }

    private mutating func dispatch() -> SSEEvent? {
        // 1. Set the last event ID string of the event source to the value of the last event ID buffer.
        lastEventID = lastEventIDBuffer
        // 2. If the data buffer is an empty string, set the data buffer and the event type buffer to the
        //    empty string and return.
        if dataBuffer.isEmpty {
            eventTypeBuffer = ""
            return nil
        }
        // 3. If the data buffer's last character is a U+000A LINE FEED (LF) character, remove it.
        var data = dataBuffer
        if data.utf8.last == Self.lf { data.removeLast() }
        // 4-5. Create the event; its type is the event type buffer, or "message" if that is empty.
        let event = SSEEvent(type: eventTypeBuffer.isEmpty ? "message" : eventTypeBuffer, data: data, lastEventID: lastEventID)
        // 6. Set the data buffer and the event type buffer to the empty string.
        dataBuffer = ""
        eventTypeBuffer = ""
        return event
    }
}
