import Glibc
import NIOCore

/// A streamed HTTP/1.1 response as the subscribers read it: the status of its head, then its body, de-chunked
/// when it is chunked (Herald's streams), as it comes when it is not (Nchan's, ended by the close).
///
/// Why not NIO's HTTP decoder: it hands a chunked body on one part per chunk, that is one per frame, through the
/// pipeline, where a close-delimited body comes as one part per read; the tool then spent about a tenth more CPU
/// reading Herald's streams than Nchan's for the same frames, and on two shared cores the tool's CPU is the
/// subscribers' latency. Here either framing costs a few comparisons per frame.
struct ResponseReader {
    enum Part {
        case head(status: Int)
        case body(ByteBuffer)
        /// The last chunk.
        case end
        /// Not an HTTP/1.1 response this reader understands; nothing more is read.
        case malformed
    }

    private enum State {
        case head
        case chunkSize
        case chunkData(remaining: Int)
        /// The CR LF after a chunk's data.
        case chunkEnd(remaining: Int)
        case closeDelimited
        case done
    }

    private var state = State.head
    /// A head or a chunk-size line not complete yet.
    private var partial = ByteBuffer()

    private static let headEnd: [UInt8] = Array("\r\n\r\n".utf8)
    private static let lineEnd: [UInt8] = Array("\r\n".utf8)

    mutating func read(_ bytes: ByteBuffer, _ part: (Part) -> Void) {
        var input = bytes
        while input.readableBytes > 0 {
            switch state {
            case .head:
                partial.writeBuffer(&input)
                guard let end = Self.find(Self.headEnd, in: partial) else { return }
                let head = partial.readSlice(length: end + Self.headEnd.count)!
                input = partial
                partial = ByteBuffer()
                guard let status = Self.status(of: head) else {
                    state = .done
                    part(.malformed)
                    return
                }
                state = Self.isChunked(head) ? .chunkSize : .closeDelimited
                part(.head(status: status))
            case .closeDelimited:
                part(.body(input))
                return
            case .chunkSize:
                partial.writeBuffer(&input)
                guard let end = Self.find(Self.lineEnd, in: partial) else { return }
                let size = Self.chunkSize(partial.readSlice(length: end)!)
                partial.moveReaderIndex(forwardBy: Self.lineEnd.count)
                input = partial
                partial = ByteBuffer()
                guard let size else {
                    state = .done
                    part(.malformed)
                    return
                }
                if size == 0 {
                    state = .done
                    part(.end)
                    return
                }
                state = .chunkData(remaining: size)
            case .chunkData(let remaining):
                let length = min(remaining, input.readableBytes)
                part(.body(input.readSlice(length: length)!))
                state = length == remaining ? .chunkEnd(remaining: 2) : .chunkData(remaining: remaining - length)
            case .chunkEnd(let remaining):
                let length = min(remaining, input.readableBytes)
                input.moveReaderIndex(forwardBy: length)
                state = length == remaining ? .chunkSize : .chunkEnd(remaining: remaining - length)
            case .done:
                return
            }
        }
    }

    private static func find(_ needle: [UInt8], in buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { Bytes.find(needle, in: $0) }
    }

    private static let httpPrefix: [UInt8] = Array("HTTP/1.".utf8)
    private static let chunkedField: [UInt8] = Array("\r\ntransfer-encoding: chunked\r\n".utf8)

    /// The status code of a head's status line (`HTTP/1.x NNN ...`), read from its bytes.
    private static func status(of head: ByteBuffer) -> Int? {
        head.withUnsafeReadableBytes { bytes in
            guard bytes.count >= 12, bytes.starts(with: httpPrefix), bytes[8] == UInt8(ascii: " ") else { return nil }
            var status = 0
            for index in 9..<12 {
                guard bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") else { return nil }
                status = status * 10 + Int(bytes[index] - UInt8(ascii: "0"))
            }
            return status
        }
    }

    /// Whether the head has `Transfer-Encoding: chunked` (the name in any case).
    private static func isChunked(_ head: ByteBuffer) -> Bool {
        head.withUnsafeReadableBytes { bytes in
            guard bytes.count >= chunkedField.count else { return false }
            for start in 0...(bytes.count - chunkedField.count) {
                var matched = true
                for offset in 0..<chunkedField.count where lowercased(bytes[start + offset]) != chunkedField[offset] {
                    matched = false
                    break
                }
                if matched { return true }
            }
            return false
        }
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    /// A chunk-size line's size (hexadecimal, up to an extension's `;`).
    private static func chunkSize(_ line: ByteBuffer) -> Int? {
        line.withUnsafeReadableBytes { bytes in
            var size = 0
            var digits = 0
            for byte in bytes {
                let value: Int
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): value = Int(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): value = Int(byte - UInt8(ascii: "a")) + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): value = Int(byte - UInt8(ascii: "A")) + 10
                case UInt8(ascii: ";"): return digits > 0 ? size : nil
                default: return nil
                }
                guard digits < 15 else { return nil }
                size = size * 16 + value
                digits += 1
            }
            return digits > 0 ? size : nil
        }
    }
}

/// Byte searches the readers share.
enum Bytes {
    /// Where `needle` first starts in `haystack`.
    static func find(_ needle: [UInt8], in haystack: UnsafeRawBufferPointer) -> Int? {
        guard haystack.count >= needle.count, let base = haystack.baseAddress else { return nil }
        var offset = 0
        while offset + needle.count <= haystack.count {
            guard let hit = memchr(base + offset, Int32(needle[0]), haystack.count - offset - needle.count + 1) else { return nil }
            let position = base.distance(to: UnsafeRawPointer(hit))
            if memcmp(base + position, needle, needle.count) == 0 { return position }
            offset = position + 1
        }
        return nil
    }
}
