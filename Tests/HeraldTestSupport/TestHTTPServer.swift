import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tiny HTTP/1.1 server for tests: blocking POSIX sockets (close-on-exec), one thread per connection,
/// `Connection: close` after every response.
///
/// `@unchecked Sendable`: the mutable state is guarded by `lock`; the listening descriptor is set in `init`.
public final class TestHTTPServer: @unchecked Sendable {
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var headers: [(name: String, value: String)]
        public var body: [UInt8]

        public func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }
    }

    public enum Reply: Sendable {
        /// Answers after `delay`.
        case respond(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = [], delay: Duration = .zero)
        /// Never answers: holds the connection until the client closes it.
        case hang
        /// Sends the head at once, then each piece after `gate` lets it through (the first goes at once), without a
        /// Content-Length; then closes, or, with `thenHang`, holds the connection until the client closes it.
        case stream(status: Int, headers: [(name: String, value: String)] = [], pieces: [[UInt8]], gate: Gate, thenHang: Bool = false)
    }

    /// Lets a streamed reply's pieces through one at a time, when the test says so.
    public final class Gate: Sendable {
        private let semaphore = DispatchSemaphore(value: 0)
        public init() {}
        public func open() { semaphore.signal() }
        fileprivate func pass() { semaphore.wait() }
    }

    /// Gets each request with its 0-based arrival index.
    public typealias Handler = @Sendable (Request, Int) -> Reply

    public let port: Int
    private let listener: Int32
    private let handler: Handler
    private let lock = NSLock()
    private var _requests: [Request] = []
    private var _open = 0
    private var _maxOpen = 0
    private var _clientClosedHangs = 0
    private var _stopped = false

    public init(handler: @escaping Handler) throws {
        self.handler = handler
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServerError.socket(errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard let port = bindToLoopback(fd), listen(fd, 512) == 0 else {
            close(fd)
            throw ServerError.socket(errno)
        }
        self.listener = fd
        self.port = port
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    public enum ServerError: Error { case socket(Int32) }

    public var url: String { "http://127.0.0.1:\(port)" }
    public var requests: [Request] { lock.withLock { _requests } }
    public var maxConcurrentConnections: Int { lock.withLock { _maxOpen } }
    /// `.hang` connections the client closed.
    public var clientClosedHangs: Int { lock.withLock { _clientClosedHangs } }

    public func stop() {
        let first = lock.withLock {
            defer { _stopped = true }
            return !_stopped
        }
        guard first else { return }
        shutdown(listener, Int32(SHUT_RDWR))  // wakes accept()
        close(listener)
    }

    deinit { stop() }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)  // (Glibc's Swift overlay has no accept4)
            lock.withLock {
                _open += 1
                _maxOpen = max(_maxOpen, _open)
            }
            Thread.detachNewThread { [self] in
                serve(client)
                close(client)
                lock.withLock { _open -= 1 }
            }
        }
    }

    private func serve(_ fd: Int32) {
        guard let request = readRequest(fd) else { return }
        let index = lock.withLock {
            _requests.append(request)
            return _requests.count - 1
        }
        switch handler(request, index) {
        case .hang:
            holdUntilClientCloses(fd)
        case .stream(let status, let headers, let pieces, let gate, let thenHang):
            var head = "HTTP/1.1 \(status) Test\r\nConnection: close\r\n"
            for (name, value) in headers { head += "\(name): \(value)\r\n" }
            sendAll(fd, Array((head + "\r\n").utf8))
            for (number, piece) in pieces.enumerated() {
                if number > 0 { gate.pass() }
                sendAll(fd, piece)
            }
            if thenHang { holdUntilClientCloses(fd) }
        case .respond(let status, let headers, let body, let delay):
            if delay > .zero {
                let (seconds, attoseconds) = delay.components
                usleep(UInt32(seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
            }
            var head = "HTTP/1.1 \(status) Test\r\nContent-Length: \(body.count)\r\nConnection: close\r\n"
            for (name, value) in headers { head += "\(name): \(value)\r\n" }
            head += "\r\n"
            sendAll(fd, Array(head.utf8) + body)
        }
    }

    private func holdUntilClientCloses(_ fd: Int32) {
        var byte: UInt8 = 0
        while true {
            let n = recv(fd, &byte, 1, 0)
            if n == 0 || (n < 0 && errno != EINTR) { break }
        }
        lock.withLock { _clientClosedHangs += 1 }
    }

    private func readRequest(_ fd: Int32) -> Request? {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        func fill() -> Bool {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return false }
            buffer += chunk[0..<n]
            return true
        }
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headerEnd: Int?
        while headerEnd == nil {
            guard fill() else { return nil }
            headerEnd = buffer.firstRange(of: separator)?.lowerBound
        }
        let head = String(decoding: buffer[..<headerEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count >= 2 else { return nil }
        let headers: [(name: String, value: String)] = lines.compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        var request = Request(method: String(requestLine[0]), path: String(requestLine[1]), headers: headers, body: [])
        let length = Int(request.header("Content-Length") ?? "0") ?? 0
        let bodyStart = headerEnd! + separator.count
        while buffer.count - bodyStart < length {
            guard fill() else { return nil }
        }
        request.body = Array(buffer[bodyStart..<(bodyStart + length)])
        return request
    }

    private func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }
}
