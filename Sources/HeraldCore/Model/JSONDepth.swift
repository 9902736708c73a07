/// The nesting depth of a JSON text, found by one scan of its bytes (brackets inside strings don't count),
/// so absurdly nested input is refused before a decoder recurses into it.
public enum JSONDepth {
    public static func exceeds(_ bytes: some Sequence<UInt8>, limit: Int) -> Bool {
        // Scanned as contiguous memory: a generic iterator over a caller's collection costs several times more.
        if let result = bytes.withContiguousStorageIfAvailable({ exceeds(scanning: $0, limit: limit) }) { return result }
        return Array(bytes).withUnsafeBufferPointer { exceeds(scanning: $0, limit: limit) }
    }

    private static func exceeds(scanning bytes: UnsafeBufferPointer<UInt8>, limit: Int) -> Bool {
        var depth = 0
        var inString = false
        var escaped = false
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > limit { return true }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return false
    }
}
