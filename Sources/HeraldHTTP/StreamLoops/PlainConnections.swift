import CEpoll
import Glibc
import HeraldCore
import Logging
import NIOCore

/// The connections of one `StreamLoop`: its listening socket, what it accepts (admitted by the `ConnectionGate`
/// as NIO's listener would), and the clock of the heads not yet read. A connection whose first request is not a
/// stream opened here goes to NIO with what was read of it (`PlainStreamListener.Adoption`). On its loop only.
final class PlainConnections {
    let loop: StreamLoop
    private let listener: Int32
    private let shared: PlainStreamListener.Shared
    private var connections: [Int32: PlainConnection] = [:]
    /// Connections in the order they were accepted, which with one timeout for all is the order of their heads'
    /// deadlines: one timer for the first of them instead of one per connection.
    private var headClock = CircularBuffer<PlainConnection>()
    private var headTimer: Scheduled<Void>?
    private var quiesced: EventLoopPromise<Void>?
    /// Where the loop's connections read (one at a time, on the loop): what they keep of it, they copy.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 1)

    init(loop: StreamLoop, listener: Int32, shared: PlainStreamListener.Shared) {
        self.loop = loop
        self.listener = listener
        self.shared = shared
    }

    deinit {
        readBuffer.deallocate()
    }

    /// Starts accepting; the loop's stop closes every socket left.
    func start() throws {
        try loop.watch(listener, events: EPOLLIN.rawValue) { [unowned self] _ in acceptWaiting() }
        loop.whenStopping { [self] in
            if quiesced == nil { Glibc.close(listener) }
            for connection in connections.values { Glibc.close(connection.socket) }
            connections = [:]
        }
    }

    /// Stops accepting, ends every stream (its client reconnects elsewhere) and closes every other connection;
    /// the future completes once none is left.
    func quiesce() -> EventLoopFuture<Void> {
        if let quiesced { return quiesced.futureResult }
        let promise = loop.makePromise(of: Void.self)
        quiesced = promise
        loop.unwatch(listener)
        Glibc.close(listener)
        if connections.isEmpty {
            promise.succeed()
        } else {
            // The last one to close completes the promise (`forget`).
            for connection in Array(connections.values) { connection.quiesce() }
        }
        return promise.futureResult
    }

    // MARK: For the connections

    func openStreamNow(_ request: StreamRequest, mayWait: Bool, sink: PlainConnection) -> StreamRoute.OpenNow {
        shared.runner.openStreamNow?(request, mayWait, loop, shared.runner.logger) { _ in sink } ?? .declined(nil)
    }

    /// `connection` closed its socket's life here.
    func closed(_ connection: PlainConnection) {
        loop.unwatch(connection.socket)
        Glibc.close(connection.socket)
        forget(connection)
    }

    /// `connection` goes to NIO's full pipeline with `head`, what was read of it, and the claim of its thread's
    /// opening if it holds one (released when the connection closes, if the route's open has not taken it over).
    func handOver(_ connection: PlainConnection, head: ByteBuffer, claim: ThreadOpenings.Claim? = nil) {
        loop.unwatch(connection.socket)
        connection.givenAway()
        connections[connection.socket] = nil
        shared.adoption.adopt(connection.socket, read: head, admission: .served, headDue: connection.headDue, claim: claim)
        if let quiesced, connections.isEmpty { quiesced.succeed() }
    }

    // MARK: Accepting

    private func acceptWaiting() {
        // A bounded number per wake-up, so that the loop's streams are not kept waiting by a connect storm; the
        // listening socket is level-triggered, so the rest are taken at the next turn.
        for _ in 0..<64 {
            let socket = cepoll_accept(listener)
            guard socket >= 0 else {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if errno != EAGAIN && errno != EWOULDBLOCK {
                    shared.runner.logger.warning("accept failed", metadata: ["errno": "\(errno)"])
                }
                return
            }
            admit(socket)
        }
    }

    private func admit(_ socket: Int32) {
        let headDue = RequestTimeoutHandler.deadline(.header, shared.limits)
        switch shared.gate.admit() {
        case .refused:
            // As `CapacityRefusal` answers on NIO's listener: at once, without reading the request.
            _ = CapacityRefusal.response.withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            Glibc.close(socket)
        case .operatorsOnly:
            shared.adoption.adopt(socket, read: ByteBuffer(), admission: .operatorsOnly, headDue: headDue, claim: nil)
        case .served:
            let connection = PlainConnection(socket: socket, headDue: headDue, owner: self)
            connections[socket] = connection
            // A client sends its request as soon as it has connected, so by the accept it has mostly arrived: it is
            // read now, before the socket is watched, rather than at the loop's next turn. What comes in between is
            // not missed: the watch reports what is there when it begins.
            connection.readArrived()
            guard connection.isOpen else { return }
            let events = Self.watched | (connection.waitsForWritable ? EPOLLOUT.rawValue : 0)
            do {
                try loop.watch(socket, events: events) { connection.ready($0) }
            } catch {
                connection.close()
                return
            }
            if connection.isReadingHead {
                headClock.append(connection)
                startHeadClock()
            }
        }
    }

    /// What a connection's socket is watched for (edge-triggered), and `EPOLLOUT` once a send could not take all.
    private static let watched = EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue

    /// `connection`'s client is behind: its socket is watched for room to write too (unless not watched yet, when the
    /// watch includes it).
    func watchWritable(_ connection: PlainConnection) {
        loop.changeEvents(of: connection.socket, to: Self.watched | EPOLLOUT.rawValue)
    }

    private func forget(_ connection: PlainConnection) {
        guard connections.removeValue(forKey: connection.socket) != nil else { return }
        shared.gate.release()
        if let quiesced, connections.isEmpty { quiesced.succeed() }
    }

    // MARK: The head clock

    private func startHeadClock() {
        guard headTimer == nil, let first = headClock.first else { return }
        let connections = NIOLoopBound(self, eventLoop: loop)
        headTimer = loop.scheduleTask(deadline: first.headDue) { connections.value.headClockRan() }
    }

    private func headClockRan() {
        headTimer = nil
        let now = NIODeadline.now()
        while let first = headClock.first, first.headDue <= now || !first.isReadingHead {
            headClock.removeFirst()
            first.headTimedOut()
        }
        startHeadClock()
    }
}
