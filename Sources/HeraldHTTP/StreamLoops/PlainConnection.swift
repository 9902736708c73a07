import CEpoll
import Glibc
import HeraldCore
import HTTPTypes
import Metrics
import NIOCore

/// One client connection on a `StreamLoop`, from its accept: its first request's head is read here, and if it is a
/// stream the node can open at once (`StreamRoute.openNow`, as `LeanStreamHandler` does on NIO's loops), the
/// connection becomes that stream, its frames written straight to the socket; anything else is handed to NIO's
/// full pipeline with the bytes read so far (`PlainConnections.handOver`).
///
/// As the stream's sink it keeps what the socket did not take in a queue of its own (NIO's outbound buffer,
/// with the same high-water mark), written when `epoll` says the socket takes more. On its loop only.
final class PlainConnection: StreamSink {
    private enum State {
        case readingHead
        /// A stream request waiting for another stream of its thread that is opening the whole way.
        case waitingForThread(StreamRequest)
        case streaming(StreamConnection)
        case closed
    }

    let socket: Int32
    /// When the first head is due (`ConnectionLimits.headerTimeoutSeconds` from the accept).
    let headDue: NIODeadline
    private unowned let owner: PlainConnections
    private var state = State.readingHead
    /// The first request's bytes, as read.
    private var head = ByteBuffer()
    /// Written when the socket takes them; nothing goes out before the response head.
    private var unsent = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    private var unsentBytes = 0
    private var headSent = false
    private var writable = true
    /// `epoll` reports `EPOLLOUT` for the socket too (`waitForWritable`).
    private(set) var waitsForWritable = false

    /// NIO's default write-buffer water marks: behind past the high one, caught up again below the low one.
    private static let highWater = 64 * 1024
    private static let lowWater = 32 * 1024

    init(socket: Int32, headDue: NIODeadline, owner: PlainConnections) {
        self.socket = socket
        self.headDue = headDue
        self.owner = owner
    }

    var isReadingHead: Bool {
        if case .readingHead = state { return true }
        return false
    }

    /// Neither closed nor given to NIO.
    var isOpen: Bool {
        if case .closed = state { return false }
        return true
    }

    // MARK: Events

    /// What `epoll` reported for the socket.
    func ready(_ events: UInt32) {
        if events & EPOLLIN.rawValue != 0 { readArrived() }
        if case .closed = state { return }
        if events & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
            hungUp()
        } else if events & EPOLLOUT.rawValue != 0 {
            sendUnsent()
        }
    }

    /// The node shuts down: a stream ends (its client reconnects elsewhere), a connection without one closes.
    func quiesce() {
        switch state {
        case .streaming(let stream): stream.end(.shutdown)
        case .readingHead, .waitingForThread: close()
        case .closed: break
        }
    }

    /// Its head did not arrive in time.
    func headTimedOut() {
        guard isReadingHead else { return }
        RequestTimeoutHandler.countClosed(.header)
        close()
    }

    /// Reads what has arrived (also at the accept, before the socket is watched: `PlainConnections.admit`).
    func readArrived() {
        let scratch = owner.readBuffer
        while true {
            if case .closed = state { return }
            let count = Glibc.read(socket, scratch.baseAddress, scratch.count)
            if count == 0 {
                hungUp()
                return
            }
            if count < 0 {
                if errno == EINTR { continue }
                if errno != EAGAIN && errno != EWOULDBLOCK { hungUp() }
                return
            }
            switch state {
            case .readingHead:
                break
            case .waitingForThread:
                // More than the one request: not a plain stream client, which the full pipeline serves.
                head.writeBytes(UnsafeRawBufferPointer(rebasing: scratch[0..<count]))
                owner.handOver(self, head: head)
                return
            case .streaming:
                // An event-stream client has nothing more to say once its request is in.
                continue
            case .closed:
                return
            }
            head.writeBytes(UnsafeRawBufferPointer(rebasing: scratch[0..<count]))
            switch StreamRequest.progress(of: head) {
            case .incomplete:
                continue
            case .complete:
                if let request = StreamRequest(head: head) { open(request) } else { owner.handOver(self, head: head) }
                return
            case .other:
                owner.handOver(self, head: head)
                return
            }
        }
    }

    /// Opens the stream on the loop, or waits for the thread's open in flight (`mayWait`, the first time), or hands
    /// the connection to the full pipeline.
    private func open(_ request: StreamRequest, mayWait: Bool = true) {
        switch owner.openStreamNow(request, mayWait: mayWait, sink: self) {
        case .opened(let response, let stream):
            begin(response, stream)
        case .afterOpening(let opened):
            state = .waitingForThread(request)
            let connection = NIOLoopBound(self, eventLoop: owner.loop)
            opened.whenComplete { _ in connection.value.askAgain() }
        case .declined(let claim):
            owner.handOver(self, head: head, claim: claim)
        }
    }

    /// The open this request waited for is over: it opens here if it can now, and goes to the full pipeline if not.
    private func askAgain() {
        guard case .waitingForThread(let request) = state else { return }
        open(request, mayWait: false)
    }

    /// The stream is open (what it wrote waits here): the head goes out first, then the rest.
    private func begin(_ response: HTTPResponse, _ stream: StreamConnection) {
        state = .streaming(stream)
        head = ByteBuffer()
        StreamRoute.openedWithoutPipeline.increment()
        let responseHead = LeanStreamHandler.chunkedHead(response, allocator: ByteBufferAllocator())
        unsent.prepend(responseHead)
        unsentBytes += responseHead.readableBytes
        headSent = true
        sendUnsent()
        let connection = NIOLoopBound(self, eventLoop: owner.loop)
        stream.whenFinished { reason in
            StreamRoute.count(reason)
            connection.value.endStream(reason)
        }
    }

    /// The stream ended: the response's last chunk (not to a client that hung up), and the connection closes.
    private func endStream(_ reason: StreamConnection.EndReason) {
        guard case .streaming = state else { return }
        if reason != .clientGone {
            queue(ByteBuffer(staticString: "0\r\n\r\n"))
            sendUnsent()
        }
        close()
    }

    private func hungUp() {
        if case .streaming(let stream) = state {
            // Its end comes back through `endStream`, which closes the connection.
            stream.end(.clientGone)
            if case .closed = state { return }
        }
        close()
    }

    /// Closes the socket and forgets the connection; idempotent.
    func close() {
        if case .closed = state { return }
        state = .closed
        unsent.removeAll()
        unsentBytes = 0
        owner.closed(self)
    }

    /// The connection is the full pipeline's from now on: nothing here touches its socket again.
    func givenAway() {
        state = .closed
    }

    // MARK: StreamSink

    var isWritable: Bool {
        if case .closed = state { return false }
        return writable
    }

    func write(_ frame: OutgoingFrame) {
        queue(frame.encoded(for: ObjectIdentifier(HTTPChunk.self), HTTPChunk.chunk))
    }

    func flush() {
        guard headSent else { return }
        sendUnsent()
    }

    func writeAndFlush(_ frame: OutgoingFrame) {
        let bytes = frame.encoded(for: ObjectIdentifier(HTTPChunk.self), HTTPChunk.chunk)
        guard headSent, unsent.isEmpty else {
            queue(bytes)
            flush()
            return
        }
        let sent = bytes.withUnsafeReadableBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if sent == bytes.readableBytes { return }
        if sent < 0, errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR {
            hungUp()
            return
        }
        queue(bytes.getSlice(at: bytes.readerIndex + max(sent, 0), length: bytes.readableBytes - max(sent, 0))!)
        waitForWritable()
    }

    /// A send could not take everything: from now on `epoll` also says when the socket takes more (edge-triggered,
    /// so it is asked once; most clients keep up and never need it).
    private func waitForWritable() {
        guard !waitsForWritable else { return }
        waitsForWritable = true
        owner.watchWritable(self)
    }

    private func queue(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        unsent.append(bytes)
        unsentBytes += bytes.readableBytes
        if unsentBytes > Self.highWater { writable = false }
    }

    /// Writes what waits, as much as the socket takes (in one `sendmsg` of up to 64 pieces at a time).
    private func sendUnsent() {
        while !unsent.isEmpty {
            // The buffers stay alive (in `pieces`) for the call, and nothing changes their storage while it runs.
            let pieces = Array(unsent.prefix(64))
            var vectors = pieces.map { piece in
                piece.withUnsafeReadableBytes { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
            }
            let sent = withExtendedLifetime(pieces) {
                vectors.withUnsafeMutableBufferPointer { vectors in
                    var message = msghdr()
                    message.msg_iov = vectors.baseAddress
                    message.msg_iovlen = vectors.count
                    return sendmsg(socket, &message, Int32(MSG_NOSIGNAL))
                }
            }
            if sent < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { waitForWritable() } else { hungUp() }
                return
            }
            var left = sent
            while left > 0, var first = unsent.first {
                if first.readableBytes <= left {
                    left -= first.readableBytes
                    unsentBytes -= first.readableBytes
                    unsent.removeFirst()
                } else {
                    first.moveReaderIndex(forwardBy: left)
                    unsentBytes -= left
                    unsent[unsent.startIndex] = first
                    left = 0
                }
            }
            if sent == 0 {
                waitForWritable()
                return
            }
        }
        if !writable, unsentBytes < Self.lowWater, case .streaming(let stream) = state {
            writable = true
            stream.sinkBecameWritable()
        }
    }
}

/// HTTP/1.1's chunked framing of a response body of unknown length.
enum HTTPChunk {
    /// One chunk holding `bytes`.
    static func chunk(_ bytes: ByteBuffer) -> ByteBuffer {
        let size = String(bytes.readableBytes, radix: 16)
        var chunk = ByteBuffer()
        chunk.reserveCapacity(size.utf8.count + bytes.readableBytes + 4)
        chunk.writeString(size)
        chunk.writeStaticString("\r\n")
        chunk.writeImmutableBuffer(bytes)
        chunk.writeStaticString("\r\n")
        return chunk
    }
}
