/// A Redis stream entry id, `milliseconds-sequence`: the SSE `id:` of every frame Herald publishes.
public struct StreamID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let milliseconds: UInt64
    public let sequence: UInt64

    public static let zero = StreamID(milliseconds: 0, sequence: 0)

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    /// Accepts `ms-seq` and, like Redis, a bare `ms` (sequence 0). Anything else is not an id.
    public init?(_ text: some StringProtocol) {
        self.init(bytes: text.utf8)
    }

    init?(bytes: some Collection<UInt8>) {
        guard !bytes.isEmpty, bytes.count <= 41 else { return nil }
        var milliseconds: UInt64 = 0
        var sequence: UInt64 = 0
        var inSequence = false
        var digits = 0
        for byte in bytes {
            if byte == UInt8(ascii: "-") {
                guard digits > 0, !inSequence else { return nil }
                inSequence = true
                digits = 0
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let current = inSequence ? sequence : milliseconds
            let (times10, overflow1) = current.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            if inSequence { sequence = sum } else { milliseconds = sum }
            digits += 1
        }
        guard digits > 0 else { return nil }
        self.init(milliseconds: milliseconds, sequence: sequence)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }

    public static func < (lhs: StreamID, rhs: StreamID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }
}
