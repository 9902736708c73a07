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
                let head = partial.readString(length: end + Self.headEnd.count) ?? ""
                input = partial
                partial = ByteBuffer()
                let statusLine = head.prefix { $0 != "\r" }.split(separator: " ")
                guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else {
                    state = .done
                    part(.malformed)
                    return
                }
                state = head.lowercased().contains("\r\ntransfer-encoding: chunked\r\n") ? .chunkSize : .closeDelimited
                part(.head(status: status))
            case .closeDelimited:
                part(.body(input))
                return
            case .chunkSize:
                partial.writeBuffer(&input)
                guard let end = Self.find(Self.lineEnd, in: partial) else { return }
                let line = partial.readString(length: end) ?? ""
                partial.moveReaderIndex(forwardBy: Self.lineEnd.count)
                input = partial
                partial = ByteBuffer()
                guard let size = Int(line.prefix { $0 != ";" }, radix: 16), size >= 0 else {
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
        buffer.withUnsafeReadableBytes { bytes in
            guard bytes.count >= needle.count else { return nil }
            var index = 0
            while index <= bytes.count - needle.count {
                var matched = true
                for offset in 0..<needle.count where bytes[index + offset] != needle[offset] {
                    matched = false
                    break
                }
                if matched { return index }
                index += 1
            }
            return nil
        }
    }
}
