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
