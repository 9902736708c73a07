/// A key's slot in a Redis Cluster: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16 384.
///
/// The hash tag is the part between the first `{` and the next `}` when that part is not empty; keys with the same
/// tag share a slot, which is what lets one script touch a thread's channel, log and delta set together.
public enum HashSlot {
    public static let count = 16_384

    public static func of(_ key: String) -> Int {
        var bytes = Substring(key).utf8[...]
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")) {
            let afterOpen = bytes.index(after: open)
            if let close = bytes[afterOpen...].firstIndex(of: UInt8(ascii: "}")), close > afterOpen {
                bytes = bytes[afterOpen..<close]
            }
        }
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return Int(crc) % count
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }
}
