import Foundation

extension UUID {
    /// The lowercase form used on the wire, in Redis keys and in SQL parameters.
    public var text: String { uuidString.lowercased() }
}
