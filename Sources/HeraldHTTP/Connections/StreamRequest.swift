import HTTPTypes
import NIOCore

/// What opening a stream on the event loop reads of its request (`StreamRoute.openNow`): its target and the two
/// headers it uses. Read either from a decoded head (`RequestHandoff`), or straight from a connection's first
/// bytes (`LeanStreamHandler`); either way a request with anything unusual is declined (nil) and left to the
/// router, which serves it the whole way or says what is wrong.
struct StreamRequest: Equatable {
    /// The request target: path and query.
    var target: String
    var authorization: String?
    var lastEventID: String?

    init(target: String, authorization: String? = nil, lastEventID: String? = nil) {
        self.target = target
        self.authorization = authorization
        self.lastEventID = lastEventID
    }

    /// Declined: a cross-origin request (CORS is the router's), a repeated `Authorization` or `Last-Event-ID`.
    init?(_ head: HTTPRequest) {
        guard let target = head.path,
              let headers = head.headerFields.singleValues(of: [.authorization, Self.lastEventIDField], unlessPresent: .origin)
        else { return nil }
        self.init(target: target, authorization: headers[0], lastEventID: headers[1])
    }

    static let lastEventIDField = HTTPField.Name("Last-Event-ID")!

    /// From the raw bytes of a connection's first request, of which only the plainest form is taken: exactly one
    /// complete head and nothing after it, `GET /chats/sse/… HTTP/1.1`, a target of URI characters, header lines
    /// `name: value` with a token for a name and visible ASCII, spaces and tabs for a value, CRLF line ends.
    /// Declined besides what the decoded head's reading declines: a body (`Content-Length`,
    /// `Transfer-Encoding`), `Upgrade`, `Expect`, a head longer than `maxHeadBytes`.
    init?(head bytes: ByteBuffer) {
        guard bytes.readableBytes <= Self.maxHeadBytes, let request = bytes.withUnsafeReadableBytes(Self.read) else { return nil }
        self = request
    }

    /// The longest head read from raw bytes; a longer one is the decoder's.
    static let maxHeadBytes = 8 * 1024

    /// How far a connection's first bytes are from a head `init(head:)` could take.
    enum HeadProgress: Equatable {
        /// They end a head (they hold its blank line): `init(head:)` decides.
        case complete
        /// They may be the start of a stream request's head: more is to come.
        case incomplete
        /// They are not the start of a stream request's head, or they are too long for one.
        case other
    }

    static func progress(of bytes: ByteBuffer) -> HeadProgress {
        bytes.withUnsafeReadableBytes { bytes in
            guard bytes.count <= maxHeadBytes, zip(bytes, requestLineStart).allSatisfy({ $0 == $1 }) else { return .other }
            return bytes.count >= requestLineStart.count && containsBlankLine(bytes) ? .complete : .incomplete
        }
    }

    /// Whether `bytes` hold CR LF CR LF. (A loop: the standard library's `firstRange(of:)`, unspecialised here,
    /// looked up generic metadata on every call and doubled the CPU of an open.)
    private static func containsBlankLine(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 3
        while index < bytes.count {
            if bytes[index] == .lf, bytes[index - 1] == .cr, bytes[index - 2] == .lf, bytes[index - 3] == .cr { return true }
            index += 1
        }
        return false
    }

    private static let requestLineStart = Array("GET \(StreamRoute.pathPrefix)".utf8)
    private static let version = Array(" HTTP/1.1\r\n".utf8)

    private static func read(_ head: UnsafeRawBufferPointer) -> StreamRequest? {
        guard head.starts(with: requestLineStart) else { return nil }
        var index = 4
        let targetStart = index
        while index < head.count, head[index].isTargetCharacter { index += 1 }
        guard head[index...].starts(with: version) else { return nil }
        var request = StreamRequest(target: String(decoding: head[targetStart..<index], as: UTF8.self))
        index += version.count
        while true {
            guard index + 1 < head.count else { return nil }
            if head[index] == .cr {
                // The blank line: the head's end, which must be the end of what arrived.
                return head[index + 1] == .lf && index + 2 == head.count ? request : nil
            }
            let nameStart = index
            while index < head.count, head[index].isTokenCharacter { index += 1 }
            guard index > nameStart, index < head.count, head[index] == .colon else { return nil }
            let name = head[nameStart..<index]
            index += 1
            while index < head.count, head[index] == .space || head[index] == .tab { index += 1 }
            let valueStart = index
            var valueEnd = index
            while index < head.count, head[index] != .cr {
                let byte = head[index]
                guard (0x20...0x7E).contains(byte) || byte == .tab else { return nil }
                index += 1
                if byte != .space && byte != .tab { valueEnd = index }
            }
            guard index + 1 < head.count, head[index + 1] == .lf else { return nil }
            index += 2
            let value = head[valueStart..<valueEnd]
            switch Field(name) {
            case .authorization?:
                guard request.authorization == nil else { return nil }
                request.authorization = String(decoding: value, as: UTF8.self)
            case .lastEventID?:
                guard request.lastEventID == nil else { return nil }
                request.lastEventID = String(decoding: value, as: UTF8.self)
            case .declined?:
                return nil
            case nil:
                continue
            }
        }
    }

    /// The header fields read here: the two a stream open uses, and those that send a request elsewhere.
    private enum Field {
        case authorization, lastEventID, declined

        private static let authorizationName = Array("authorization".utf8)
        private static let lastEventIDName = Array("last-event-id".utf8)
        private static let declinedNames = ["origin", "content-length", "transfer-encoding", "upgrade", "expect"].map { Array($0.utf8) }

        init?(_ name: Slice<UnsafeRawBufferPointer>) {
            if Self.equalsIgnoringCase(name, Self.authorizationName) {
                self = .authorization
            } else if Self.equalsIgnoringCase(name, Self.lastEventIDName) {
                self = .lastEventID
            } else if Self.declinedNames.contains(where: { Self.equalsIgnoringCase(name, $0) }) {
                self = .declined
            } else {
                return nil
            }
        }

        /// ASCII case-insensitive equality of a token with a lower-case name of letters and `-` (on which setting
        /// the 0x20 bit is the identity).
        private static func equalsIgnoringCase(_ name: Slice<UnsafeRawBufferPointer>, _ lowercased: [UInt8]) -> Bool {
            name.count == lowercased.count && zip(name, lowercased).allSatisfy { $0 | 0x20 == $1 }
        }
    }
}

private extension UInt8 {
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let colon = UInt8(ascii: ":")
    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")

    /// What RFC 3986 allows in a URI (unreserved, reserved, `%`).
    var isTargetCharacter: Bool {
        switch self {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"), UInt8(ascii: "/"),
             UInt8(ascii: "?"), UInt8(ascii: "#"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "@"), UInt8(ascii: "!"),
             UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"),
             UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: "%"):
            true
        default: false
        }
    }

    /// RFC 9110's `tchar`.
    var isTokenCharacter: Bool {
        switch self {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default: false
        }
    }
}
