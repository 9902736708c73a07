import Foundation

extension UUID {
    /// The lowercase form used on the wire, in Redis keys and in SQL parameters.
    public var text: String { uuidString.lowercased() }
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
