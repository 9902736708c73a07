import CHiredis
import NIOCore

/// hiredis's RESP reader. Not thread-safe: owned by one channel handler, used on its event loop.
final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>

    init() {
        guard let reader = redisReaderCreate() else {
            fatalError("redisReaderCreate: out of memory")
        }
        self.reader = reader
    }

    deinit {
        redisReaderFree(self.reader)
    }

    /// Appends bytes to the reader's buffer (hiredis keeps its own copy).
    func feed(_ buffer: ByteBuffer) throws {
        let status = buffer.withUnsafeReadableBytes { bytes in
            redisReaderFeed(self.reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        guard status == REDIS_OK else {
            throw RedisError.protocolError(self.errorString)
        }
    }

    /// The next complete reply, or nil when more bytes are needed. The caller owns it: `freeReplyObject` it.
    /// After a thrown error the reader is unusable and the connection must be closed.
    func next() throws -> UnsafeMutablePointer<redisReply>? {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(self.reader, &reply) == REDIS_OK else {
            throw RedisError.protocolError(self.errorString)
        }
        return reply?.assumingMemoryBound(to: redisReply.self)
    }

    private var errorString: String {
        withUnsafeBytes(of: self.reader.pointee.errstr) { bytes in
            String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }
}

extension redisReply {
    /// The string payload of a STRING/STATUS/ERROR reply.
    var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: self.str, count: self.str == nil ? 0 : self.len)
    }

    func stringValue() -> String {
        String(decoding: self.bytes, as: UTF8.self)
    }

    func bufferValue(allocator: ByteBufferAllocator) -> ByteBuffer {
        let bytes = self.bytes
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return buffer
    }

    func equals(_ literal: StaticString) -> Bool {
        let bytes = self.bytes
        return bytes.count == literal.utf8CodeUnitCount
            && bytes.elementsEqual(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// Element `index` of an ARRAY reply.
    func child(_ index: Int) -> UnsafeMutablePointer<redisReply>? {
        guard index < self.elements, let elements = self.element else { return nil }
        return elements[index]
    }
}

extension RESPValue {
    /// Converts a hiredis reply; bulk strings are copied once into buffers from `allocator`.
    init(reply: UnsafePointer<redisReply>, allocator: ByteBufferAllocator) {
        let reply = reply.pointee
        switch reply.type {
        case REDIS_REPLY_STRING:
            self = .bulkString(reply.bufferValue(allocator: allocator))
        case REDIS_REPLY_STATUS:
            self = .simpleString(reply.stringValue())
        case REDIS_REPLY_ERROR:
            self = .error(reply.stringValue())
        case REDIS_REPLY_INTEGER:
            self = .integer(Int(truncatingIfNeeded: reply.integer))
        case REDIS_REPLY_ARRAY:
            var values: [RESPValue] = []
            values.reserveCapacity(reply.elements)
            for index in 0..<reply.elements {
                if let element = reply.child(index) {
                    values.append(RESPValue(reply: element, allocator: allocator))
                } else {
                    values.append(.null)
                }
            }
            self = .array(values)
        default:  // REDIS_REPLY_NIL
            self = .null
        }
    }
}

/// A reply Redis pushes on a connection in subscribed mode.
enum PubSubPush {
    case message(channel: String, payload: ByteBuffer)
    case subscribe(channel: String)
    case unsubscribe(channel: String)
    case pong
    /// An error reply to a subscription command (e.g. `MOVED` for an `SSUBSCRIBE` sent to the wrong shard).
    case error(String)

    /// Recognises `["message", channel, payload]`, `["subscribe"|"unsubscribe", channel, count]`, their sharded
    /// forms (`smessage`, `ssubscribe`, `sunsubscribe`), `["pong", ""]`, and, when no command awaits a reply, an
    /// error reply and (once Redis has left subscribed mode) a bare `+PONG`.
    /// Works on the raw reply so a message costs only its channel string and its payload buffer.
    init?(reply: UnsafePointer<redisReply>, commandPending: Bool, allocator: ByteBufferAllocator) {
        let reply = reply.pointee
        if reply.type == REDIS_REPLY_STATUS {
            guard !commandPending, reply.equals("PONG") else { return nil }
            self = .pong
            return
        }
        if reply.type == REDIS_REPLY_ERROR {
            guard !commandPending else { return nil }
            self = .error(reply.stringValue())
            return
        }
        guard reply.type == REDIS_REPLY_ARRAY, reply.elements >= 2, let kind = reply.child(0),
            kind.pointee.type == REDIS_REPLY_STRING
        else { return nil }
        let kindReply = kind.pointee
        if kindReply.equals("pong") {
            self = .pong
            return
        }
        guard let channel = reply.child(1), channel.pointee.type == REDIS_REPLY_STRING else { return nil }
        if kindReply.equals("message") || kindReply.equals("smessage") {
            guard reply.elements == 3, let payload = reply.child(2), payload.pointee.type == REDIS_REPLY_STRING else {
                return nil
            }
            self = .message(
                channel: channel.pointee.stringValue(),
                payload: payload.pointee.bufferValue(allocator: allocator)
            )
        } else if kindReply.equals("subscribe") || kindReply.equals("ssubscribe") {
            self = .subscribe(channel: channel.pointee.stringValue())
        } else if kindReply.equals("unsubscribe") || kindReply.equals("sunsubscribe") {
            self = .unsubscribe(channel: channel.pointee.stringValue())
        } else {
            return nil
        }
    }
}

/// Encodes commands with `redisFormatCommandArgv` (binary safe: every argument has an explicit length).
enum RESPEncoder {
    static func encode(_ arguments: [RedisArgument], allocator: ByteBufferAllocator) throws -> ByteBuffer {
        guard !arguments.isEmpty else {
            throw RedisError.protocolError("empty command")
        }
        guard arguments.count <= Int(Int32.max) else {
            throw RedisError.protocolError("too many arguments")
        }
        var total = 0
        for argument in arguments {
            switch argument {
            case .string(let string): total += string.utf8.count
            case .bytes(let buffer): total += buffer.readableBytes
            }
        }

        // hiredis wants every argument as (pointer, length) at once: lay them out in one scratch block.
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(total, 1), alignment: 1)
        defer { scratch.deallocate() }
        let argv = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: arguments.count)
        defer { argv.deallocate() }
        let argvlen = UnsafeMutablePointer<Int>.allocate(capacity: arguments.count)
        defer { argvlen.deallocate() }

        var offset = 0
        for (index, argument) in arguments.enumerated() {
            let destination = scratch.baseAddress! + offset
            let count: Int
            switch argument {
            case .string(var string):
                count = string.withUTF8 { source in
                    if let base = source.baseAddress, source.count > 0 {
                        destination.copyMemory(from: base, byteCount: source.count)
                    }
                    return source.count
                }
            case .bytes(let buffer):
                count = buffer.withUnsafeReadableBytes { source in
                    if let base = source.baseAddress, source.count > 0 {
                        destination.copyMemory(from: base, byteCount: source.count)
                    }
                    return source.count
                }
            }
            argv[index] = UnsafePointer(destination.assumingMemoryBound(to: CChar.self))
            argvlen[index] = count
            offset += count
        }

        var command: UnsafeMutablePointer<CChar>?
        let length = redisFormatCommandArgv(&command, Int32(arguments.count), argv, argvlen)
        guard length >= 0, let command else {
            throw RedisError.protocolError("redisFormatCommandArgv failed")
        }
        defer { redisFreeCommand(command) }
        var buffer = allocator.buffer(capacity: Int(length))
        buffer.writeBytes(UnsafeRawBufferPointer(start: command, count: Int(length)))
        return buffer
    }
}
