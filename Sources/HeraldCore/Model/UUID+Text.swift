import Foundation

extension UUID {
    /// The lowercase form used on the wire, in Redis keys and in SQL parameters. Written directly: `uuidString`
    /// formats through `snprintf`, a measurable cost on the delta path, which needs several per token.
    public var text: String {
        withUnsafeBytes(of: uuid) { bytes in
            String(unsafeUninitializedCapacity: 36) { output in
                let digits: StaticString = "0123456789abcdef"
                var position = 0
                for (index, byte) in bytes.enumerated() {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        output[position] = UInt8(ascii: "-")
                        position += 1
                    }
                    output[position] = digits.utf8Start[Int(byte >> 4)]
                    output[position + 1] = digits.utf8Start[Int(byte & 0x0f)]
                    position += 2
                }
                return position
            }
        }
    }
}

extension UUID {
    /// Parses the canonical form, `8-4-4-4-12` hex digits in either case, as `UUID(uuidString:)` does, without
    /// its `sscanf`: ids are parsed on every request and several times per webhook.
    public init?(text: String) {
        var text = text
        guard let uuid = text.withUTF8(Self.canonicalUUID) else { return nil }
        self.init(uuid: uuid)
    }

    public init?(text: Substring) {
        var text = text
        guard let uuid = text.withUTF8(Self.canonicalUUID) else { return nil }
        self.init(uuid: uuid)
    }

    /// (Concrete, not generic over `StringProtocol`: unspecialised, its byte loop went through witness tables and
    /// showed in the profile of stream opens.)
    private static func canonicalUUID(_ text: UnsafeBufferPointer<UInt8>) -> uuid_t? {
        guard text.count == 36 else { return nil }
        var uuid: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        let complete = withUnsafeMutableBytes(of: &uuid) { bytes -> Bool in
            var position = 0
            for index in 0..<16 {
                if index == 4 || index == 6 || index == 8 || index == 10 {
                    guard text[position] == UInt8(ascii: "-") else { return false }
                    position += 1
                }
                guard let high = text[position].hexDigitValue, let low = text[position + 1].hexDigitValue else { return false }
                bytes[index] = high << 4 | low
                position += 2
            }
            return true
        }
        return complete ? uuid : nil
    }
}

extension UInt8 {
    /// The value of an ASCII hex digit in either case (nil for any other byte).
    var hexDigitValue: UInt8? {
        switch self {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): self - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): self - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): self - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension KeyedEncodingContainer {
    /// The synthesized `Encodable` conformances of this module pick these overloads over the generic ones, so
    /// every id leaves Herald lowercase: the same text as in Redis keys, SQL and URLs.
    mutating func encode(_ value: UUID, forKey key: Key) throws {
        try encode(value.text, forKey: key)
    }

    mutating func encodeIfPresent(_ value: UUID?, forKey key: Key) throws {
        guard let value else { return }
        try encode(value.text, forKey: key)
    }
}
