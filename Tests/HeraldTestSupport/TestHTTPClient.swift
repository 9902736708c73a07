// A small HTTP/1.1 client for integration tests, on SwiftNIO's client codec: chunked transfer-encoding
// and framing are decoded by NIO, not by the server under test. Plain http:// only.

import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure of the test HTTP client or SSE helpers: bad URL, timeout, connection closed early.
public struct TestHTTPError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public struct TestHTTPResponse: Sendable {
    public let status: Int
    public let headers: [(name: String, value: String)]
    public let body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The first value of the header `name`, compared case-insensitively.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// The body decoded as UTF-8 (invalid sequences replaced).
    public var text: String { String(decoding: body, as: UTF8.self) }
}

public enum TestHTTPClient {
    /// One request on a fresh connection (`Connection: close`); throws on connect failure or timeout.
    /// `Host`, `Connection: close` and (with a body) `Content-Length` are added unless `headers` has them.
    public static func request(
        _ method: String,
        _ url: String,
        headers: [(String, String)] = [],
        body: [UInt8]? = nil,
        timeout: Duration = .seconds(10)
    ) async throws -> TestHTTPResponse {
        let target = try TestURL(url)
        let head = makeRequestHead(method: method, target: target, headers: headers, bodyLength: body?.count)
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let promise = eventLoop.makePromise(of: TestHTTPResponse.self)
        let timeoutTask = eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            promise.fail(TestHTTPError("\(method) \(url): no complete response within \(timeout)"))
        }
        promise.futureResult.whenComplete { _ in timeoutTask.cancel() }

        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(TimeAmount(timeout))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            OneShotResponseHandler(request: head, body: body, promise: promise)
                        )
                    }
                }
                .connect(host: target.host, port: target.port)
                .get()
        } catch {
            let wrapped = TestHTTPError("\(method) \(url): connect failed: \(error)")
            promise.fail(wrapped)
            throw wrapped
        }
        promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
        return try await promise.futureResult.get()
    }

    /// Same, with a JSON body: adds `Content-Type: application/json` unless `headers` has a Content-Type.
    public static func request(
        _ method: String,
        _ url: String,
        headers: [(String, String)] = [],
        json: String,
        timeout: Duration = .seconds(10)
    ) async throws -> TestHTTPResponse {
        var all = headers
        if !all.contains(where: { $0.0.lowercased() == "content-type" }) {
            all.append(("Content-Type", "application/json"))
        }
        return try await request(method, url, headers: all, body: Array(json.utf8), timeout: timeout)
    }

    fileprivate static func makeRequestHead(method: String, target: TestURL, headers: [(String, String)], bodyLength: Int?) -> HTTPRequestHead {
        var fields = HTTPHeaders()
        let names = Set(headers.map { $0.0.lowercased() })
        if !names.contains("host") { fields.add(name: "Host", value: target.hostHeader) }
        if !names.contains("connection") { fields.add(name: "Connection", value: "close") }
        if let bodyLength, !names.contains("content-length"), !names.contains("transfer-encoding") {
            fields.add(name: "Content-Length", value: String(bodyLength))
        }
        for (name, value) in headers { fields.add(name: name, value: value) }
        return HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: target.requestTarget, headers: fields)
    }
}

/// `http://host[:port][/path][?query]`, parsed without Foundation.URL.
private struct TestURL: Sendable {
    var host: String
    var port: Int
    var hostHeader: String
    var requestTarget: String

    init(_ string: String) throws {
        let scheme = "http://"
        guard string.lowercased().hasPrefix(scheme) else { throw TestHTTPError("only http:// URLs are supported: \(string)") }
        let rest = string.dropFirst(scheme.count)
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = String(rest[..<authorityEnd])
        var target = String(rest[authorityEnd...])
        if let fragment = target.firstIndex(of: "#") { target = String(target[..<fragment]) }
        if target.isEmpty || target.hasPrefix("?") { target = "/" + target }

        var host = authority
        var port = 80
        if authority.hasPrefix("[") {  // [v6]:port
            guard let close = authority.firstIndex(of: "]") else { throw TestHTTPError("bad host in \(string)") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()) else { throw TestHTTPError("bad port in \(string)") }
                port = p
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]) else { throw TestHTTPError("bad port in \(string)") }
            port = p
        }
        guard !host.isEmpty, (0...65535).contains(port) else { throw TestHTTPError("bad authority in \(string)") }
        self.host = host
        self.port = port
        self.hostHeader = authority
        self.requestTarget = target
    }
}

/// Sends the request when the connection becomes active, collects one response, fulfils the promise.
private final class OneShotResponseHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private let requestBody: [UInt8]?
    private let promise: EventLoopPromise<TestHTTPResponse>
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []

    init(request: HTTPRequestHead, body: [UInt8]?, promise: EventLoopPromise<TestHTTPResponse>) {
        self.request = request
        self.requestBody = body
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        if let requestBody, !requestBody.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: requestBody)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let responseHead):
            head = responseHead
        case .body(let buffer):
            body.append(contentsOf: buffer.readableBytesView)
        case .end:
            guard let head else { return }
            promise.succeed(
                TestHTTPResponse(
                    status: Int(head.status.code),
                    headers: head.headers.map { (name: $0.name, value: $0.value) },
                    body: body
                )
            )
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(TestHTTPError("\(request.method) \(request.uri): \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(TestHTTPError("\(request.method) \(request.uri): connection closed before the response was complete"))
        context.fireChannelInactive()
    }
}

/// A streaming GET (for SSE): `status` and headers are there once `open` returns, then the body bytes
/// arrive on `body` as the server sends them.
public final class TestStreamingConnection: Sendable {
    public let status: Int
    public let headers: [(name: String, value: String)]
    /// Body bytes as they arrive (de-chunked by NIO), single consumer. Finishes normally when the server
    /// ends the response; finishes by throwing when the connection closes or fails before that
    /// (including a local `kill()` or `closeGracefully()`).
    public let body: AsyncThrowingStream<[UInt8], any Error>
    private let channel: any Channel

    private init(status: Int, headers: [(name: String, value: String)], body: AsyncThrowingStream<[UInt8], any Error>, channel: any Channel) {
        self.status = status
        self.headers = headers
        self.body = body
        self.channel = channel
    }

    /// Connects, sends `GET`, and returns once the response head arrived.
    /// - receiveBufferSize: SO_RCVBUF, set before connecting, to make a deliberately slow reader.
    /// - autoRead: with `false`, the connection reads from the socket only until the response head has
    ///   arrived and then stops (bytes that came in the same read still reach `body`); the kernel
    ///   buffers fill and the server's writes back up. `resumeReading()` starts reading again.
    /// - timeout: for connecting and receiving the head.
    public static func open(
        _ url: String,
        headers: [(String, String)] = [],
        receiveBufferSize: Int? = nil,
        autoRead: Bool = true,
        timeout: Duration = .seconds(10)
    ) async throws -> TestStreamingConnection {
        let target = try TestURL(url)
        let request = TestHTTPClient.makeRequestHead(method: "GET", target: target, headers: headers, bodyLength: nil)
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let headPromise = eventLoop.makePromise(of: HTTPResponseHead.self)
        let timeoutTask = eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            headPromise.fail(TestHTTPError("GET \(url): no response head within \(timeout)"))
        }
        headPromise.futureResult.whenComplete { _ in timeoutTask.cancel() }
        let (stream, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream()

        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeout))
            .channelOption(ChannelOptions.autoRead, value: false)  // the handler issues reads itself
        if let receiveBufferSize {
            bootstrap = bootstrap.channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBufferSize))
        }
        let channel: any Channel
        do {
            channel = try await bootstrap
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            StreamingResponseHandler(request: request, autoRead: autoRead, headPromise: headPromise, body: continuation)
                        )
                    }
                }
                .connect(host: target.host, port: target.port)
                .get()
        } catch {
            let wrapped = TestHTTPError("GET \(url): connect failed: \(error)")
            headPromise.fail(wrapped)
            continuation.finish(throwing: wrapped)
            throw wrapped
        }
        let head: HTTPResponseHead
        do {
            head = try await headPromise.futureResult.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return TestStreamingConnection(
            status: Int(head.status.code),
            headers: head.headers.map { (name: $0.name, value: $0.value) },
            body: stream,
            channel: channel
        )
    }

    /// The first value of the response header `name`, compared case-insensitively.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Stop reading from the socket: the kernel's receive buffer fills and the server's writes back up.
    /// (At most one read already requested from the kernel may still complete.)
    public func pauseReading() async {
        try? await channel.setOption(ChannelOptions.autoRead, value: false).get()
    }

    /// Read from the socket again, continuously.
    public func resumeReading() async {
        try? await channel.setOption(ChannelOptions.autoRead, value: true).get()
    }

    /// Normal close (FIN). Returns once the channel is closed.
    public func closeGracefully() async {
        try? await channel.close().get()
    }

    /// Abortive close, like a vanished client: SO_LINGER {1, 0}, then close, so the kernel sends RST.
    /// Returns at once; the close happens on the channel's event loop right after.
    public func kill() {
        let channel = self.channel
        channel.eventLoop.execute {
            guard let provider = channel as? any SocketOptionProvider else {
                channel.close(promise: nil)
                return
            }
            provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in
                channel.close(promise: nil)
            }
        }
    }

    /// Like `kill()`, returning once the socket is closed.
    public func killAndWait() async {
        kill()
        try? await channel.closeFuture.get()
    }
}

/// Sends the GET on activation, reads until the head arrives, then reads on (autoRead) or stops.
private final class StreamingResponseHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private let autoRead: Bool
    private let headPromise: EventLoopPromise<HTTPResponseHead>
    private let body: AsyncThrowingStream<[UInt8], any Error>.Continuation
    private var headReceived = false
    private var finished = false

    init(
        request: HTTPRequestHead,
        autoRead: Bool,
        headPromise: EventLoopPromise<HTTPResponseHead>,
        body: AsyncThrowingStream<[UInt8], any Error>.Continuation
    ) {
        self.request = request
        self.autoRead = autoRead
        self.headPromise = headPromise
        self.body = body
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.head(request)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.read()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard !headReceived else { return }
            headReceived = true
            headPromise.succeed(head)
            if autoRead {
                context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            }
        case .body(let buffer):
            body.yield(Array(buffer.readableBytesView))
        case .end:
            finish(error: nil)
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !headReceived { context.read() }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(error: TestHTTPError("GET \(request.uri): \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(error: TestHTTPError("GET \(request.uri): connection closed before the response ended"))
        context.fireChannelInactive()
    }

    private func finish(error: TestHTTPError?) {
        guard !finished else { return }
        finished = true
        headPromise.fail(error ?? TestHTTPError("GET \(request.uri): response ended without a head"))
        if let error { body.finish(throwing: error) } else { body.finish() }
    }
}

/// Convenience for SSE: reads a `TestStreamingConnection`'s body (it becomes the body's single consumer)
/// through an `SSEParser` and keeps everything received.
public final class SSEStream: Sendable {
    public let connection: TestStreamingConnection
    private let state: SSELockedState
    private let reader: Task<Void, Never>

    public init(connection: TestStreamingConnection) {
        let state = SSELockedState()
        self.connection = connection
        self.state = state
        self.reader = Task {
            do {
                for try await chunk in connection.body {
                    state.update { $0.ingest(chunk) }
                }
                state.update { $0.end(error: nil) }
            } catch {
                state.update { $0.end(error: "\(error)") }
            }
        }
    }

    deinit { reader.cancel() }

    /// Opens `url` with `TestStreamingConnection.open` and wraps it.
    public static func open(_ url: String, headers: [(String, String)] = [], timeout: Duration = .seconds(10)) async throws -> SSEStream {
        SSEStream(connection: try await TestStreamingConnection.open(url, headers: headers, timeout: timeout))
    }

    /// Events received so far, in order.
    public var events: [SSEEvent] { state.read { $0.events } }
    /// Comments received so far (text after `:`, one leading space removed).
    public var comments: [String] { state.read { $0.comments } }
    /// Everything received so far (the de-chunked body), for byte-level assertions.
    public var rawBytes: [UInt8] { state.read { $0.raw } }
    /// The parser's last valid `retry` value.
    public var retry: Int? { state.read { $0.parser.retry } }
    /// Whether the body has ended (cleanly or not).
    public var isEnded: Bool { state.read { $0.ended } }
    /// Why the body ended, when it did not end with the end of the response (e.g. connection closed or reset).
    public var endError: String? { state.read { $0.endError } }

    /// Waits until `count` events (not comments) have arrived in total and returns the first `count`;
    /// throws on timeout or stream end, with what it has in the error message.
    @discardableResult
    public func waitForEvents(count: Int, timeout: Duration = .seconds(10)) async throws -> [SSEEvent] {
        try await waitFor("\(count) event(s)", timeout: timeout) { state in
            state.events.count >= count ? Array(state.events.prefix(count)) : nil
        }
    }

    /// Waits until some comment received so far contains `text`.
    public func waitForComment(containing text: String, timeout: Duration = .seconds(10)) async throws {
        try await waitFor("a comment containing \"\(text)\"", timeout: timeout) { state in
            state.comments.contains { $0.contains(text) } ? () : nil
        }
    }

    /// Waits until the body has ended: the server ended the response or the connection closed
    /// (see `endError` to tell the two apart).
    public func waitForEnd(timeout: Duration = .seconds(10)) async throws {
        try await waitFor("the end of the stream", timeout: timeout, failOnEnd: false) { state in
            state.ended ? () : nil
        }
    }

    private func waitFor<T>(
        _ what: String,
        timeout: Duration,
        failOnEnd: Bool = true,
        _ check: (SSEState) -> T?
    ) async throws -> T {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            let (result, version, ended, summary) = state.read { state in
                (check(state), state.version, state.ended, state.summary)
            }
            if let result { return result }
            if failOnEnd && ended { throw TestHTTPError("SSE stream ended before \(what); \(summary)") }
            if ContinuousClock.now >= deadline { throw TestHTTPError("timed out after \(timeout) waiting for \(what); \(summary)") }
            await state.waitForChange(after: version, until: deadline)
        }
    }
}

private struct SSEState: Sendable {
    var parser = SSEParser()
    var events: [SSEEvent] = []
    var comments: [String] = []
    var raw: [UInt8] = []
    var ended = false
    var endError: String?
    var version = 0
    var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    var woken: Set<Int> = []
    var nextWaiterID = 0

    mutating func ingest(_ chunk: [UInt8]) {
        raw += chunk
        for item in parser.feed(chunk) {
            switch item {
            case .event(let event): events.append(event)
            case .comment(let text): comments.append(text)
            }
        }
    }

    mutating func end(error: String?) {
        ended = true
        endError = error
    }

    var summary: String {
        let shown = events.suffix(10).map { "\($0.type): \($0.data.prefix(200))" }
        return "have \(events.count) event(s) \(shown)\(events.count > 10 ? " (last 10)" : ""), comments \(comments.suffix(10)), "
            + "\(raw.count) byte(s)" + (ended ? ", ended: \(endError ?? "response complete")" : "")
    }
}

/// SSEState behind a lock, with waiters woken on every change.
/// `@unchecked Sendable`: every access to `value` happens while holding `lock`.
private final class SSELockedState: @unchecked Sendable {
    private let lock = NSLock()
    private var value = SSEState()

    func read<T>(_ body: (SSEState) -> T) -> T {
        lock.withLock { body(value) }
    }

    /// Applies `body`, bumps the version and wakes every waiter.
    func update(_ body: (inout SSEState) -> Void) {
        let waiters = lock.withLock {
            body(&value)
            value.version += 1
            defer { value.waiters.removeAll() }
            return Array(value.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when the state changes after `version`, when `deadline` passes, or when the task is cancelled.
    func waitForChange(after version: Int, until deadline: ContinuousClock.Instant) async {
        let id = lock.withLock {
            value.nextWaiterID += 1
            return value.nextWaiterID
        }
        let timer = Task { [self] in
            try? await Task.sleep(until: deadline, clock: .continuous)
            wake(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = lock.withLock {
                    if value.version != version || value.woken.remove(id) != nil { return true }
                    value.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            wake(id)
        }
        timer.cancel()
        lock.withLock { _ = value.woken.remove(id) }
    }

    private func wake(_ id: Int) {
        let waiter = lock.withLock {
            let waiter = value.waiters.removeValue(forKey: id)
            if waiter == nil { value.woken.insert(id) }
            return waiter
        }
        waiter?.resume()
    }
}
