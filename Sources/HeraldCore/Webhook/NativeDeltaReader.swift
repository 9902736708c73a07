/// Reads the native `delta` webhook, `{"event":"delta","run_id":…,"thread_id":…,"index":…,"delta":…}`, straight from
/// its bytes: an engine posts one per token, and Foundation's `JSONDecoder` spent more time on it than verifying
/// its signature.
///
/// Strict and deliberately narrow: it reads one flat object whose known members have the expected types (`event`,
/// `delta`: strings; `run_id`, `thread_id`: string or null; `index`: null or a plain non-negative integer), skips
/// unknown members with scalar values, and answers nil for anything else (a nested value, a duplicate member, a
/// fraction or an exponent, an escaped NUL, a lone surrogate, invalid UTF-8, anything that is not JSON), which
/// `WebhookDecoder` then reads the general way and, where it is wrong, says precisely why.
struct NativeDeltaReader {
    struct Fields: Equatable {
        var event: String
        var runID: String?
        var threadID: String?
        var delta: String
        var index: Int?
    }

    /// The largest index read here; larger ones go the general way (which refuses above 1 000 000 000).
    private static let maxIndexDigits = 10

    static func read(_ body: some Collection<UInt8>) -> Fields? {
        if let fields = body.withContiguousStorageIfAvailable({ bytes in
            var reader = NativeDeltaReader(bytes: bytes)
            return reader.object()
        }) {
            return fields
        }
        let bytes = Array(body)
        return bytes.withUnsafeBufferPointer { bytes in
            var reader = NativeDeltaReader(bytes: bytes)
            return reader.object()
        }
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var position = 0

    private init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    private enum Member {
        case event, runID, threadID, delta, index

        init?(key: String) {
            switch key {
            case "event": self = .event
            case "run_id": self = .runID
            case "thread_id": self = .threadID
            case "delta": self = .delta
            case "index": self = .index
            default: return nil
            }
        }
    }

    private mutating func object() -> Fields? {
        var event: String?, runID: String?, threadID: String?, delta: String?, index: Int?
        var seen: [Member] = []
        guard take(UInt8(ascii: "{")) else { return nil }
        if !take(UInt8(ascii: "}")) {
            repeat {
                guard let key = string(), take(UInt8(ascii: ":")) else { return nil }
                guard let member = Member(key: key) else {
                    guard skipScalar() else { return nil }
                    continue
                }
                guard !seen.contains(member) else { return nil }
                seen.append(member)
                switch member {
                case .event: guard let value = string() else { return nil }; event = value
                case .delta: guard let value = string() else { return nil }; delta = value
                case .runID: guard let value = nullableString() else { return nil }; runID = value
                case .threadID: guard let value = nullableString() else { return nil }; threadID = value
                case .index:
                    if takeLiteral("null") { continue }
                    guard let value = integer() else { return nil }
                    index = value
                }
            } while take(UInt8(ascii: ","))
            guard take(UInt8(ascii: "}")) else { return nil }
        }
        skipWhitespace()
        guard position == bytes.count, let event, let delta else { return nil }
        return Fields(event: event, runID: runID, threadID: threadID, delta: delta, index: index)
    }

    // MARK: Tokens

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"): position += 1
            default: return
            }
        }
    }

    /// Skips whitespace, then consumes `byte` if it is next.
    private mutating func take(_ byte: UInt8) -> Bool {
        skipWhitespace()
        guard position < bytes.count, bytes[position] == byte else { return false }
        position += 1
        return true
    }

    private mutating func takeLiteral(_ literal: StaticString) -> Bool {
        skipWhitespace()
        let count = literal.utf8CodeUnitCount
        guard bytes.count - position >= count else { return false }
        for offset in 0..<count where bytes[position + offset] != literal.utf8Start[offset] {
            return false
        }
        position += count
        return true
    }

    /// A string, or nil for null; nil overall (the outer optional) for anything else.
    private mutating func nullableString() -> String?? {
        if takeLiteral("null") { return .some(nil) }
        return string().map { .some($0) }
    }

    /// A plain non-negative integer: digits, no leading zero, nothing after them that would make it a fraction.
    private mutating func integer() -> Int? {
        skipWhitespace()
        let start = position
        while position < bytes.count, bytes[position] >= UInt8(ascii: "0"), bytes[position] <= UInt8(ascii: "9") {
            position += 1
        }
        let digits = position - start
        guard digits > 0, digits <= Self.maxIndexDigits, digits == 1 || bytes[start] != UInt8(ascii: "0") else { return nil }
        if position < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[position]) { return nil }
        var value = 0
        for offset in start..<position { value = value * 10 + Int(bytes[offset] - UInt8(ascii: "0")) }
        return value
    }

    /// The value of a member this reader does not know: a string, a number, `true`, `false` or `null`.
    private mutating func skipScalar() -> Bool {
        skipWhitespace()
        guard position < bytes.count else { return false }
        switch bytes[position] {
        case UInt8(ascii: "\""): return string() != nil
        case UInt8(ascii: "t"): return takeLiteral("true")
        case UInt8(ascii: "f"): return takeLiteral("false")
        case UInt8(ascii: "n"): return takeLiteral("null")
        default: return skipNumber()
        }
    }

    /// A JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    private mutating func skipNumber() -> Bool {
        if position < bytes.count, bytes[position] == UInt8(ascii: "-") { position += 1 }
        let integerStart = position
        guard skipDigits() > 0, position - integerStart == 1 || bytes[integerStart] != UInt8(ascii: "0") else { return false }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard skipDigits() > 0 else { return false }
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard skipDigits() > 0 else { return false }
        }
        return true
    }

    private mutating func skipDigits() -> Int {
        let start = position
        while position < bytes.count, bytes[position] >= UInt8(ascii: "0"), bytes[position] <= UInt8(ascii: "9") {
            position += 1
        }
        return position - start
    }

    /// A string with its escapes resolved; nil for an unescaped control character, an unknown escape, `\u0000`, a
    /// lone surrogate or invalid UTF-8.
    private mutating func string() -> String? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = position
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let text = String(validating: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
                position += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { return escapedString(from: start) }
            guard byte >= 0x20 else { return nil }
            position += 1
        }
        return nil
    }

    /// The rest of a string that has escapes, from its first byte at `start`.
    private mutating func escapedString(from start: Int) -> String? {
        var text = Array(bytes[start..<position])
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(validating: text, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard position < bytes.count else { return nil }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): text.append(escape)
                case UInt8(ascii: "b"): text.append(0x08)
                case UInt8(ascii: "f"): text.append(0x0C)
                case UInt8(ascii: "n"): text.append(UInt8(ascii: "\n"))
                case UInt8(ascii: "r"): text.append(UInt8(ascii: "\r"))
                case UInt8(ascii: "t"): text.append(UInt8(ascii: "\t"))
                case UInt8(ascii: "u"):
                    guard let scalar = unicodeEscape() else { return nil }
                    text.append(contentsOf: String(Character(scalar)).utf8)
                default: return nil
                }
            case 0x00..<0x20:
                return nil
            default:
                text.append(byte)
            }
        }
        return nil
    }

    /// The scalar of `\uXXXX` (after the `u`), or of a surrogate pair `\uD8xx\uDCxx`; nil for NUL or a lone surrogate.
    private mutating func unicodeEscape() -> Unicode.Scalar? {
        guard let unit = hexQuad() else { return nil }
        switch unit {
        case 0: return nil
        case 0xD800..<0xDC00:
            guard bytes.count - position >= 6, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else { return nil }
            position += 2
            guard let low = hexQuad(), (0xDC00..<0xE000).contains(low) else { return nil }
            return Unicode.Scalar(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
        case 0xDC00..<0xE000: return nil
        default: return Unicode.Scalar(unit)
        }
    }

    private mutating func hexQuad() -> UInt32? {
        guard bytes.count - position >= 4 else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let digit = bytes[position].hexDigitValue else { return nil }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }
}
