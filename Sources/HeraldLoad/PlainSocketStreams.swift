import CEpoll
import Foundation
import Glibc
import NIOCore

/// The streams of a connections-only run (`--connections-only`, SSE or another hub's), opened on plain sockets on
/// one `epoll` thread instead of NIO channels: each connects, sends its request, and is open once its response says
/// so (Herald's `: connected`, another hub's 200 head); then it is held, unread, until `closeAll`.
///
/// Why: through NIO's `ClientBootstrap`, a channel, a task and a promise per stream, the tool spent some 80 µs of
/// CPU per open, three times either hub's, and on the two shared cores its pace was the storm's: both hubs measured
/// the same. Here an open costs the tool its system calls, and the time to open N streams is the server's again.
final class PlainSocketStreams: @unchecked Sendable {
    // @unchecked: the sockets are touched by one thread at a time, the opening thread and then `closeAll`'s
    // caller, which waits for that thread to end (`open` returns only then).
    private var sockets: [Int32] = []

    struct Opened {
        let streams: PlainSocketStreams
        /// Each stream's time from its connect to being open.
        let openNanos: [Int64]
    }

    /// Opens `count` streams, `batch` at a time (each batch wholly open before the next connects); stream `i`
    /// asks for `paths[i % paths.count]`. Throws if one is refused, closed, or not open within `timeout` seconds.
    static func open(
        _ target: Target, paths: [String], headers: [(String, String)], plain: Bool, count: Int, batch: Int, timeout: Int32 = 15
    ) async throws -> Opened {
        let streams = PlainSocketStreams()
        let requests = paths.map { path in
            var request = "GET \(path) HTTP/1.1\r\nHost: \(target.hostHeader)\r\nAccept: text/event-stream\r\n"
            for (name, value) in headers { request += "\(name): \(value)\r\n" }
            return Array((request + "\r\n").utf8)
        }
        // A thread of its own: the storm blocks in `epoll_wait`, which no task of the cooperative pool may do.
        let openNanos: [Int64] = try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                do {
                    continuation.resume(
                        returning: try streams.open(target.address, requests: requests, plain: plain, count: count, batch: batch, timeout: timeout)
                    )
                } catch {
                    streams.closeAll()
                    continuation.resume(throwing: error)
                }
            }
            thread.start()
        }
        return Opened(streams: streams, openNanos: openNanos)
    }

    /// How many of the streams the server has closed (an end of file waits on the socket).
    func closedByServer() -> Int {
        var byte: UInt8 = 0
        return sockets.count(where: { recv($0, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) == 0 })
    }

    func closeAll() {
        for socket in sockets { close(socket) }
        sockets = []
    }

    private struct Pending {
        let socket: Int32
        let started: UInt64
        var sent = false
        var reader = ResponseReader()
        /// The body so far (Herald's: until its `: connected` line).
        var body = ByteBuffer()
    }

    private static let connectedLine = Array(": connected\n".utf8)

    private func open(
        _ address: SocketAddress, requests: [[UInt8]], plain: Bool, count: Int, batch: Int, timeout: Int32
    ) throws -> [Int64] {
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw LoadError("epoll_create1: errno \(errno)") }
        defer { close(epoll) }
        sockets.reserveCapacity(count)
        var openNanos: [Int64] = []
        openNanos.reserveCapacity(count)
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        var scratch = [UInt8](repeating: 0, count: 4096)
        var next = 0
        while next < count {
            let range = next..<min(count, next + batch)
            var pending: [Int: Pending] = [:]
            for index in range {
                let socket = try Self.connect(address)
                sockets.append(socket)
                pending[index] = Pending(socket: socket, started: Now.nanos())
                var event = epoll_event()
                event.events = EPOLLOUT.rawValue
                event.data.u64 = UInt64(index)
                guard epoll_ctl(epoll, EPOLL_CTL_ADD, socket, &event) == 0 else { throw LoadError("epoll_ctl: errno \(errno)") }
            }
            while !pending.isEmpty {
                let ready = epoll_wait(epoll, &events, Int32(events.count), timeout * 1000)
                if ready < 0, errno == EINTR { continue }
                guard ready > 0 else { throw LoadError("\(pending.count) of streams \(range) not open within \(timeout) s") }
                for event in events.prefix(Int(ready)) {
                    let index = Int(event.data.u64)
                    guard var stream = pending[index] else { continue }
                    if !stream.sent {
                        try Self.send(requests[index % requests.count], on: stream.socket, index: index)
                        stream.sent = true
                        var reading = epoll_event()
                        reading.events = EPOLLIN.rawValue
                        reading.data.u64 = UInt64(index)
                        epoll_ctl(epoll, EPOLL_CTL_MOD, stream.socket, &reading)
                        pending[index] = stream
                        continue
                    }
                    let length = read(stream.socket, &scratch, scratch.count)
                    if length < 0, errno == EAGAIN || errno == EINTR { continue }
                    guard length > 0 else { throw LoadError("stream \(index): closed before it was open") }
                    var isOpen = false
                    var failure: LoadError?
                    stream.reader.read(ByteBuffer(bytes: scratch[0..<length])) { part in
                        switch part {
                        case .head(let status):
                            if status != 200 { failure = LoadError("stream \(index): answered \(status)") } else if plain { isOpen = true }
                        case .body(let bytes):
                            stream.body.writeImmutableBuffer(bytes)
                        case .end, .malformed:
                            failure = LoadError("stream \(index): its response ended before it was open")
                        }
                    }
                    if let failure { throw failure }
                    if !plain {
                        isOpen = stream.body.withUnsafeReadableBytes { DeltaTally.find(Self.connectedLine, in: $0) != nil }
                    }
                    if isOpen {
                        openNanos.append(Int64(Now.nanos() - stream.started))
                        epoll_ctl(epoll, EPOLL_CTL_DEL, stream.socket, nil)
                        pending[index] = nil
                    } else {
                        pending[index] = stream
                    }
                }
            }
            next = range.upperBound
        }
        return openNanos
    }

    /// A non-blocking TCP socket connecting to `address` (with `TCP_NODELAY`, as the NIO subscribers have).
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
}
