import CEpoll
import Dispatch
import Foundation
import Glibc
import NIOCore

/// Event streams (Herald's SSE, or another hub's) on plain sockets rather than NIO channels: opened on one `epoll`
/// thread (each connects, sends its request, and is open once its response says so: Herald's `: connected`,
/// another hub's 200 head), then, for a delta run, read by `--event-loops` threads with an `epoll` each, every
/// frame parsed and tallied (`SSEReader`, `DeltaTally`) at the moment its read returns.
///
/// Why not NIO: through `ClientBootstrap`, a channel, a task and a promise per stream, the tool spent some 80 µs of
/// CPU per open, three times either hub's, and on the two shared cores a storm went at the tool's pace, both hubs
/// measuring the same; and a frame's read went through the channel's pipeline and allocations before it was
/// stamped, so that the tool's own reading was most of the latency measured. Here an open or a frame costs the
/// tool little more than its system calls.
final class PlainSocketStreams: @unchecked Sendable {
    // @unchecked: each stream is touched by one thread at a time: the opening thread, then (reading) the thread
    // whose `epoll` watches it, then, once those have stopped (`stopReading`, `open` returning), the caller.

    /// One stream: its socket, its reader and what it counted.
    private final class Stream {
        let socket: Int32
        /// Which delta source (thread or channel) it reads.
        let source: Int
        let started: UInt64
        var sentRequest = false
        var reader: SSEReader
        var tally: DeltaTally

        init(socket: Int32, source: Int, plain: Bool, tally: DeltaTally) {
            self.socket = socket
            self.source = source
            self.started = Now.nanos()
            self.reader = SSEReader(plain: plain)
            self.tally = tally
        }
    }

    /// A thread reading some of the streams until told to stop (through its eventfd).
    private struct Reading {
        let epoll: Int32
        let stop: Int32
    }

    private var streams: [Stream] = []
    private var readings: [Reading] = []
    private let stopped = DispatchGroup()

    var count: Int { streams.count }

    struct Opened {
        let streams: PlainSocketStreams
        /// Each stream's time from its connect to being open.
        let openNanos: [Int64]
    }

    /// Opens `count` streams, `batch` at a time (each batch wholly open before the next connects); stream `i`
    /// asks for `paths[i % paths.count]` and expects `expected` deltas of that source. Throws, with every socket
    /// closed, if one is refused, closed, or not open within `timeout` seconds.
    static func open(
        _ target: Target, paths: [String], headers: [(String, String)], plain: Bool, count: Int, batch: Int, expected: Int,
        progress: Progress, timeout: Int32 = 15
    ) async throws -> Opened {
        let streams = PlainSocketStreams()
        let requests = paths.map { path in
            var request = "GET \(path) HTTP/1.1\r\nHost: \(target.hostHeader)\r\nAccept: text/event-stream\r\n"
            for (name, value) in headers { request += "\(name): \(value)\r\n" }
            return Array((request + "\r\n").utf8)
        }
        let opening = Opening(
            address: target.address, requests: requests, plain: plain, count: count, batch: batch,
            tally: DeltaTally(expected: expected, progress: progress), timeout: timeout
        )
        // A thread of its own: the storm waits in `epoll_wait`, which no task of the cooperative pool may do.
        let openNanos: [Int64] = try await withCheckedThrowingContinuation { continuation in
            Thread {
                do {
                    continuation.resume(returning: try streams.open(opening))
                } catch {
                    streams.closeAll()
                    continuation.resume(throwing: error)
                }
            }.start()
        }
        return Opened(streams: streams, openNanos: openNanos)
    }

    /// Reads every stream from now on, on `threads` threads (stream `i` on thread `i % threads`), until
    /// `stopReading`.
    func startReading(threads: Int) throws {
        for index in 0..<max(threads, 1) {
            let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
            let stop = eventfd(0, Int32(EFD_CLOEXEC))
            guard epoll >= 0, stop >= 0 else { throw LoadError("epoll_create1 or eventfd: errno \(errno)") }
            var event = epoll_event()
            event.events = EPOLLIN.rawValue
            event.data.u64 = UInt64.max
            epoll_ctl(epoll, EPOLL_CTL_ADD, stop, &event)
            for position in stride(from: index, to: streams.count, by: max(threads, 1)) {
                var event = epoll_event()
                event.events = EPOLLIN.rawValue
                event.data.u64 = UInt64(position)
                epoll_ctl(epoll, EPOLL_CTL_ADD, streams[position].socket, &event)
            }
            readings.append(Reading(epoll: epoll, stop: stop))
            stopped.enter()
            Thread { [self] in
                readUntilStopped(epoll: epoll)
                stopped.leave()
            }.start()
        }
    }

    /// Stops the reading threads and waits for them to end.
    func stopReading() async {
        for reading in readings { _ = eventfd_write(reading.stop, 1) }
        await withCheckedContinuation { continuation in stopped.notify(queue: .global()) { continuation.resume() } }
        for reading in readings {
            close(reading.epoll)
            close(reading.stop)
        }
        readings = []
    }

    /// What each stream saw, once reading has stopped; `accepted[source]` are the indexes its source's webhooks had
    /// accepted.
    func results(accepted: [[Bool]]) -> [SubscriberResult] {
        streams.map { $0.tally.result(accepted: accepted[$0.source]) }
    }

    /// How many of the streams the server has closed (an end of file waits on the socket).
    func closedByServer() -> Int {
        var byte: UInt8 = 0
        return streams.count(where: { recv($0.socket, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) == 0 })
    }

    func closeAll() {
        for stream in streams { close(stream.socket) }
        streams = []
    }

    // MARK: Opening

    private struct Opening {
        let address: SocketAddress
        let requests: [[UInt8]]
        let plain: Bool
        let count: Int
        let batch: Int
        let tally: DeltaTally
        let timeout: Int32
    }

    private func open(_ opening: Opening) throws -> [Int64] {
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw LoadError("epoll_create1: errno \(errno)") }
        defer { close(epoll) }
        streams.reserveCapacity(opening.count)
        var openNanos: [Int64] = []
        openNanos.reserveCapacity(opening.count)
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        var buffer = ByteBufferAllocator().buffer(capacity: 4096)
        var next = 0
        while next < opening.count {
            let range = next..<min(opening.count, next + opening.batch)
            var waiting = Set(range)
            for index in range {
                let socket = try Self.connect(opening.address)
                streams.append(Stream(socket: socket, source: index % opening.requests.count, plain: opening.plain, tally: opening.tally))
                var event = epoll_event()
                event.events = EPOLLOUT.rawValue
                event.data.u64 = UInt64(index)
                guard epoll_ctl(epoll, EPOLL_CTL_ADD, socket, &event) == 0 else { throw LoadError("epoll_ctl: errno \(errno)") }
            }
            while !waiting.isEmpty {
                let ready = epoll_wait(epoll, &events, Int32(events.count), opening.timeout * 1000)
                if ready < 0, errno == EINTR { continue }
                guard ready > 0 else { throw LoadError("\(waiting.count) of streams \(range) not open within \(opening.timeout) s") }
                for event in events.prefix(Int(ready)) {
                    let index = Int(event.data.u64)
                    let stream = streams[index]
                    guard waiting.contains(index) else { continue }
                    if !stream.sentRequest {
                        try Self.send(opening.requests[stream.source], on: stream.socket, index: index)
                        stream.sentRequest = true
                        var reading = epoll_event()
                        reading.events = EPOLLIN.rawValue
                        reading.data.u64 = UInt64(index)
                        epoll_ctl(epoll, EPOLL_CTL_MOD, stream.socket, &reading)
                        continue
                    }
                    let length = Self.read(stream.socket, into: &buffer)
                    if length < 0, errno == EAGAIN || errno == EINTR { continue }
                    guard length > 0 else { throw LoadError("stream \(index): closed before it was open") }
                    let seen = stream.reader.read(buffer, receivedAt: Now.nanos(), into: &stream.tally)
                    if let status = seen.status, status != 200 { throw LoadError("stream \(index): answered \(status)") }
                    if seen.ended { throw LoadError("stream \(index): its response ended before it was open") }
                    if seen.connected {
                        openNanos.append(Int64(Now.nanos() - stream.started))
                        epoll_ctl(epoll, EPOLL_CTL_DEL, stream.socket, nil)
                        waiting.remove(index)
                    }
                }
            }
            next = range.upperBound
        }
        return openNanos
    }

    /// A non-blocking TCP socket connecting to `address` (with `TCP_NODELAY`, as a browser's has).
    private static func connect(_ address: SocketAddress) throws -> Int32 {
        let socket = Glibc.socket(
            address.protocol.rawValue, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0
        )
        guard socket >= 0 else { throw LoadError("socket: errno \(errno)") }
        var on: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        let started = address.withSockAddr { Glibc.connect(socket, $0, socklen_t($1)) }
        guard started == 0 || errno == EINPROGRESS else {
            let error = errno
            close(socket)
            throw LoadError("connect: errno \(error)")
        }
        return socket
    }

    /// The request, whole: a fresh connection's send buffer takes it.
    private static func send(_ request: [UInt8], on socket: Int32, index: Int) throws {
        let sent = request.withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == request.count else { throw LoadError("stream \(index): could not send its request (errno \(errno))") }
    }

    // MARK: Reading

    /// One `read` of `socket` into `buffer`, emptied first (what the readers keep of it, they copy): its result.
    private static func read(_ socket: Int32, into buffer: inout ByteBuffer) -> Int {
        buffer.clear()
        var length = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: buffer.capacity) { space in
            length = Glibc.read(socket, space.baseAddress, space.count)
            return max(length, 0)
        }
        return length
    }

    /// A reading thread's loop over the streams its `epoll` watches: each readable stream is read once per wake-up,
    /// its frames stamped when the read returns; a stream the server closes is counted closed and no longer watched.
    private func readUntilStopped(epoll: Int32) {
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        var buffer = ByteBufferAllocator().buffer(capacity: 65536)
        while true {
            let ready = epoll_wait(epoll, &events, Int32(events.count), -1)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { return }
            for event in events.prefix(Int(ready)) {
                guard event.data.u64 != UInt64.max else { return }
                let stream = streams[Int(event.data.u64)]
                let length = Self.read(stream.socket, into: &buffer)
                let now = Now.nanos()
                if length < 0, errno == EAGAIN || errno == EINTR { continue }
                if length <= 0 {
                    stream.tally.closed()
                    epoll_ctl(epoll, EPOLL_CTL_DEL, stream.socket, nil)
                    continue
                }
                let seen = stream.reader.read(buffer, receivedAt: now, into: &stream.tally)
                if seen.ended {
                    stream.tally.closed()
                    epoll_ctl(epoll, EPOLL_CTL_DEL, stream.socket, nil)
                }
            }
        }
    }
}
