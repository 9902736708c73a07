import Glibc
import NIOCore
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

/// An open WebSocket subscriber on a NIO channel: its channel and the promise fulfilled once the server has
/// subscribed it to its thread (event streams are read on plain sockets: `PlainSocketStreams`).
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

    /// A WebSocket subscribed to the thread of the stream path `uri` (`/chats/sse/<thread>`).
    static func openWebSocket(
        _ target: Target, path uri: String, source: Int, headers: [(String, String)], expected: Int,
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
                    let thread = String(uri.split(separator: "/").last ?? "")
                    try channel.pipeline.syncOperations.addHandler(
                        WebSocketSubscriberHandler(thread: thread, host: host, headers: headers, tally: tally, connected: connected)
                    )
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

/// An event-stream response as a subscriber reads it, whichever socket it comes from: the head's status, then the
/// body's lines with a minimal SSE parser: `event: delta`, and from its `data:` line the delta text
/// `"<index>:<send nanos>:<padding>"` the load tool posted; Herald's `: connected` comment. In plain mode (another
/// hub) every `data:` line is read, whatever its event, and the stream is open at its 200 head.
struct SSEReader {
    /// What a read brought besides deltas.
    struct Seen {
        /// The response's status, when its head came in this read.
        var status: Int?
        /// The stream is open: Herald's `: connected`, or in plain mode the head.
        var connected = false
        /// The response ended (its last chunk) or could not be read.
        var ended = false
    }

    private let plain: Bool
    private var response = ResponseReader()
    private var pending = ByteBuffer()
    private var inDeltaFrame: Bool

    init(plain: Bool) {
        self.plain = plain
        self.inDeltaFrame = plain
    }

    /// Reads `bytes`, received at `now`: the deltas in it go to `tally`.
    mutating func read(_ bytes: ByteBuffer, receivedAt now: UInt64, into tally: inout DeltaTally) -> Seen {
        var seen = Seen()
        var body = false
        response.read(bytes) { part in
            switch part {
            case .head(let status):
                seen.status = status
                seen.connected = plain && status == 200
            case .body(let bytes):
                pending.writeImmutableBuffer(bytes)
                body = true
            case .end, .malformed:
                seen.ended = true
            }
        }
        if body, consumeLines(receivedAt: now, into: &tally) { seen.connected = true }
        return seen
    }

    private enum Line {
        case blank, deltaEvent, otherEvent, connectedComment, other
        case deltaData(index: Int, sentNanos: UInt64)
        case badData
    }

    /// Whether the lines held Herald's `: connected`.
    private mutating func consumeLines(receivedAt now: UInt64, into tally: inout DeltaTally) -> Bool {
        var connected = false
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
            case .connectedComment: connected = true
            case .other: break
            case .badData: tally.malformed += 1
            case .deltaData(let index, let sent): tally.record(index: index, sentNanos: sent, receivedAt: now)
            }
        }
        if pending.readableBytes == 0 {
            pending.clear()
        } else if pending.readerIndex > 16 * 1024 {
            pending.discardReadBytes()
        }
        return connected
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
        guard let start = Bytes.find(deltaKey, in: bytes) else { return nil }
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
