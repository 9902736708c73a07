import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Counters every subscriber bumps, read by the main task while it waits.
final class Progress: Sendable {
    /// Frames of `event: delta` parsed, across subscribers.
    let frames = Atomic<Int>(0)
    /// Subscribers that have every expected index.
    let complete = Atomic<Int>(0)
    /// Subscribers whose connection closed before they were complete.
    let closedEarly = Atomic<Int>(0)
}

/// What one subscriber saw, computed on its event loop once the run is over.
struct SubscriberResult: Sendable {
    var frames = 0
    /// Accepted indexes never received.
    var missing = 0
    /// Receptions beyond the first of an index.
    var duplicates = 0
    /// Indexes received that were never accepted (or outside 0..<expected).
    var unexpected = 0
    /// `data:` lines of delta frames the parser could not read.
    var malformed = 0
    var latencies: [Int64] = []
    var lastReceive: UInt64 = 0
    var closedEarly = false
}

/// An open SSE subscriber: its channel and the promise fulfilled by the `: connected` comment, which Herald
/// sends only once the thread's channel is subscribed in Redis (so no frame published afterwards is missed).
struct Subscriber: Sendable {
    let channel: any Channel
    let connected: EventLoopPromise<Void>
    /// Which delta source (thread or channel) it reads.
    let source: Int
    /// What its handler counted; read on the channel's loop.
    let tally: NIOLoopBound<TallyBox>

    /// How a subscriber reads: Herald's SSE stream, another hub's (`plain`: ready at its 200 head, deltas in any
    /// event's data), or Herald's WebSocket subscribed to the stream's thread.
    enum Transport: Sendable {
        case sse, plain, webSocket
    }

    static func open(
        _ target: Target, path uri: String, source: Int, headers: [(String, String)], transport: Transport, expected: Int,
        progress: Progress, group: any EventLoopGroup, timeout: TimeAmount = .seconds(15)
    ) async throws -> Subscriber {
        let host = target.hostHeader
        let subscriber = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(10))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(to: target.address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connected = channel.eventLoop.makePromise(of: Void.self)
                    let tally = TallyBox(DeltaTally(expected: expected, progress: progress))
                    let pipeline = channel.pipeline.syncOperations
                    switch transport {
                    case .sse, .plain:
                        try pipeline.addHandler(
                            SSESubscriberHandler(
                                uri: uri, host: host, headers: headers, plain: transport == .plain, tally: tally, connected: connected
                            )
                        )
                    case .webSocket:
                        let thread = String(uri.split(separator: "/").last ?? "")
                        try pipeline.addHandler(
                            WebSocketSubscriberHandler(thread: thread, host: host, headers: headers, tally: tally, connected: connected)
                        )
                    }
                    return Subscriber(
                        channel: channel, connected: connected, source: source, tally: NIOLoopBound(tally, eventLoop: channel.eventLoop)
                    )
                }
            }
        let promise = subscriber.connected
        let timer = subscriber.channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(LoadError("not ready within \(timeout.nanoseconds / 1_000_000_000) s"))
        }
        do {
            try await subscriber.connected.futureResult.get()
            timer.cancel()
        } catch {
            timer.cancel()
            try? await subscriber.channel.close()
            throw error
        }
        return subscriber
    }

    func result(accepted: [Bool]) async throws -> SubscriberResult {
        let tally = self.tally
        return try await channel.eventLoop.submit { tally.value.tally.result(accepted: accepted) }.get()
    }

    func close() async {
        try? await channel.close()
    }
}

/// Sends `GET /chats/sse/{thread}` and reads the stream with a minimal SSE parser: lines, `event: delta`, and
/// from its `data:` line the delta text `"<index>:<send nanos>:<padding>"` the load tool posted. In plain mode
/// (another hub) every `data:` line is read, whatever its event.
/// Lives on its channel's event loop; all state is confined there.
final class SSESubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let uri: String
    private let host: String
    private let headers: [(String, String)]
    private let plain: Bool
    private let tally: TallyBox
    private let connected: EventLoopPromise<Void>

    private var response = ResponseReader()
    private var pending = ByteBuffer()
    private var inDeltaFrame = false

    init(uri: String, host: String, headers: [(String, String)], plain: Bool, tally: TallyBox, connected: EventLoopPromise<Void>) {
        self.uri = uri
        self.host = host
        self.headers = headers
        self.plain = plain
        self.inDeltaFrame = plain
        self.tally = tally
        self.connected = connected
    }

    func channelActive(context: ChannelHandlerContext) {
        var request = "GET \(uri) HTTP/1.1\r\nHost: \(host)\r\nAccept: text/event-stream\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: request)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = Now.nanos()
        var ended = false
        var body = false
        response.read(unwrapInboundIn(data)) { part in
            switch part {
            case .head(let status):
                if status != 200 {
                    connected.fail(LoadError("GET \(uri) answered \(status)"))
                    ended = true
                } else if plain {
                    connected.succeed()
                }
            case .body(let bytes):
                pending.writeImmutableBuffer(bytes)
                body = true
            case .end, .malformed:
                ended = true
            }
        }
        if body { consumeLines(receivedAt: now) }
        if ended { context.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connected.fail(LoadError("GET \(uri): connection closed before `: connected`"))
        tally.tally.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Parsing

    private enum Line {
        case blank, deltaEvent, otherEvent, connectedComment, other
        case deltaData(index: Int, sentNanos: UInt64)
        case badData
    }

    private func consumeLines(receivedAt now: UInt64) {
        while true {
            let parsed: (length: Int, line: Line)? = pending.withUnsafeReadableBytes { bytes in
                guard let base = bytes.baseAddress, let newline = memchr(base, 0x0A, bytes.count) else { return nil }
                let length = base.distance(to: UnsafeRawPointer(newline))
                return (length, Self.classify(UnsafeRawBufferPointer(rebasing: bytes[0..<length]), inDeltaFrame: inDeltaFrame))
            }
            guard let parsed else { break }
            pending.moveReaderIndex(forwardBy: parsed.length + 1)
            switch parsed.line {
            case .blank: inDeltaFrame = plain
            case .deltaEvent: inDeltaFrame = true
            case .otherEvent: inDeltaFrame = plain
            case .connectedComment: connected.succeed()
            case .other: break
            case .badData: tally.tally.malformed += 1
            case .deltaData(let index, let sent): tally.tally.record(index: index, sentNanos: sent, receivedAt: now)
            }
        }
        if pending.readableBytes == 0 {
            pending.clear()
        } else if pending.readerIndex > 16 * 1024 {
            pending.discardReadBytes()
        }
    }

    private static let eventPrefix = Array("event: ".utf8)
    private static let deltaName = Array("delta".utf8)
    private static let dataPrefix = Array("data: ".utf8)
    private static let connectedLine = Array(": connected".utf8)

    private static func classify(_ line: UnsafeRawBufferPointer, inDeltaFrame: Bool) -> Line {
        if line.isEmpty || (line.count == 1 && line[0] == 0x0D) { return .blank }
        if line.starts(with: eventPrefix) {
            return line.dropFirst(eventPrefix.count).elementsEqual(deltaName) ? .deltaEvent : .otherEvent
        }
        if line.starts(with: dataPrefix) {
            guard inDeltaFrame else { return .other }
            guard let delta = DeltaTally.delta(in: line) else { return .badData }
            return .deltaData(index: delta.index, sentNanos: delta.sentNanos)
        }
        if line.elementsEqual(connectedLine) { return .connectedComment }
        return .other
    }
}

/// The deltas one subscriber received, whatever its transport: which indexes, how often, how late.
struct DeltaTally {
    let expected: Int
    let progress: Progress
    private var counts: [UInt16]
    private var distinct = 0
    private var frames = 0
    var malformed = 0
    private var outOfRange = 0
    private var latencies: [Int64] = []
    private var lastReceive: UInt64 = 0
    private var isComplete = false
    private var isClosed = false

    init(expected: Int, progress: Progress) {
        self.expected = expected
        self.progress = progress
        self.counts = [UInt16](repeating: 0, count: expected)
        self.latencies.reserveCapacity(expected)
    }

    private static let deltaKey = Array("\"delta\":\"".utf8)

    /// The index and send time in a delta's text (`"delta":"<index>:<send nanos>:<padding>"`) within `bytes`.
    static func delta(in bytes: UnsafeRawBufferPointer) -> (index: Int, sentNanos: UInt64)? {
        guard let start = find(deltaKey, in: bytes) else { return nil }
        var position = start + deltaKey.count
        guard let index = readNumber(bytes, &position), position < bytes.count, bytes[position] == UInt8(ascii: ":") else { return nil }
        position += 1
        guard let sent = readNumber(bytes, &position), position < bytes.count, bytes[position] == UInt8(ascii: ":") else { return nil }
        return (Int(index), sent)
    }

    mutating func closed() {
        isClosed = true
        if !isComplete { progress.closedEarly.wrappingAdd(1, ordering: .relaxed) }
    }

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

    private static func readNumber(_ bytes: UnsafeRawBufferPointer, _ position: inout Int) -> UInt64? {
        var value: UInt64 = 0
        let start = position
        while position < bytes.count, bytes[position] >= UInt8(ascii: "0"), bytes[position] <= UInt8(ascii: "9"), position - start < 19 {
            value = value * 10 + UInt64(bytes[position] - UInt8(ascii: "0"))
            position += 1
        }
        return position > start ? value : nil
    }

    mutating func record(index: Int, sentNanos: UInt64, receivedAt now: UInt64) {
        frames += 1
        lastReceive = now
        progress.frames.wrappingAdd(1, ordering: .relaxed)
        guard index >= 0, index < expected else {
            outOfRange += 1
            return
        }
        latencies.append(Int64(bitPattern: now &- sentNanos))
        if counts[index] == 0 {
            distinct += 1
            if distinct == expected, !isClosed {
                isComplete = true
                progress.complete.wrappingAdd(1, ordering: .relaxed)
            }
        }
        if counts[index] < UInt16.max { counts[index] += 1 }
    }

    func result(accepted: [Bool]) -> SubscriberResult {
        var result = SubscriberResult()
        result.frames = frames
        result.malformed = malformed
        result.unexpected = outOfRange
        result.latencies = latencies
        result.lastReceive = lastReceive
        result.closedEarly = isClosed && !isComplete
        for index in 0..<expected {
            let count = Int(counts[index])
            let wanted = index < accepted.count && accepted[index]
            if wanted && count == 0 { result.missing += 1 }
            if !wanted && count > 0 { result.unexpected += 1 }
            if count > 1 { result.duplicates += count - 1 }
        }
        return result
    }
}

/// A subscriber's tally, shared by its handler and the `Subscriber` that reads it; confined to the channel's loop.
final class TallyBox {
    var tally: DeltaTally

    init(_ tally: DeltaTally) {
        self.tally = tally
    }
}
