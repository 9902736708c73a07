/// One event of a `text/event-stream`, as the HTML standard's parser dispatches it.
public struct ServerSentEvent: Sendable, Equatable {
    /// `event:`, or `message` when the event named none.
    public var type: String
    /// The `data:` lines joined by line feeds.
    public var data: String
    /// The stream's last event id when the event was dispatched (ids carry over to later events).
    public var lastEventID: String

    public init(type: String, data: String, lastEventID: String) {
        self.type = type
        self.data = data
        self.lastEventID = lastEventID
    }
}

/// Reads a `text/event-stream` incrementally, as the HTML standard's "event stream interpretation" says: bytes
/// arrive in pieces cut anywhere (inside a line, between CR and LF, inside a UTF-8 sequence), lines end with CRLF,
/// LF or CR, a leading BOM is dropped, comments and unknown fields are ignored, and an event is dispatched at a
/// blank line only if it has data. An event left unfinished when the stream ends is discarded.
public struct EventStreamParser: Sendable {
    public struct EventTooLarge: Error, Equatable {}

    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var eventType: [UInt8] = []
    private var lastEventID = ""
    private var sawCarriageReturn = false
    private var atStreamStart = true
    private let maxEventBytes: Int

    /// `maxEventBytes` bounds one event (its pending line and data together), so a peer that never ends a line
    /// cannot make the reader grow without bound.
    public init(maxEventBytes: Int = 4 << 20) {
        self.maxEventBytes = maxEventBytes
    }

    /// Feeds the next piece of the stream; returns the events it completed, in order.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws(EventTooLarge) -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\n"):
                if sawCarriageReturn {
                    sawCarriageReturn = false  // the LF of a CRLF: the line already ended at the CR
                } else if let event = endLine() {
                    events.append(event)
                }
            case UInt8(ascii: "\r"):
                sawCarriageReturn = true
                if let event = endLine() { events.append(event) }
            default:
                sawCarriageReturn = false
                line.append(byte)
                guard line.count + data.count <= maxEventBytes else { throw EventTooLarge() }
            }
        }
        return events
    }

    private mutating func endLine() -> ServerSentEvent? {
        defer { line.removeAll(keepingCapacity: true) }
        if atStreamStart {
            // A BOM can only open the stream, so it is the first line's first bytes (pieces may cut it anywhere).
            atStreamStart = false
            if line.starts(with: [0xEF, 0xBB, 0xBF]) { line.removeFirst(3) }
        }
        guard !line.isEmpty else { return dispatch() }
        if line[0] == UInt8(ascii: ":") { return nil }  // a comment
        let field: ArraySlice<UInt8>
        var value: ArraySlice<UInt8>
        if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            field = line[..<colon]
            value = line[(colon + 1)...]
            if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        } else {
            field = line[...]
            value = []
        }
        switch String(decoding: field, as: UTF8.self) {
        case "event":
            eventType = Array(value)
        case "data":
            data.append(contentsOf: value)
            data.append(UInt8(ascii: "\n"))
        case "id":
            if !value.contains(0) { lastEventID = String(decoding: value, as: UTF8.self) }
        default:
            break  // `retry` and unknown fields: a reader that does not reconnect by itself has no use for them
        }
        return nil
    }

    private mutating func dispatch() -> ServerSentEvent? {
        defer {
            data.removeAll(keepingCapacity: true)
            eventType.removeAll()
        }
        guard !data.isEmpty else { return nil }
        let type = eventType.isEmpty ? "message" : String(decoding: eventType, as: UTF8.self)
        return ServerSentEvent(type: type, data: String(decoding: data.dropLast(), as: UTF8.self), lastEventID: lastEventID)
    }
}
