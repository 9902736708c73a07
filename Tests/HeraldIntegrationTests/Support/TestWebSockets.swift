import Foundation
import HeraldTestSupport
import HTTPTypes
import Logging
import NIOCore
import NIOSSL
import NIOWebSocket
import Synchronization
import Testing
import WSClient

/// A WebSocket client of another implementation than Herald's (swift-websocket's), speaking Herald's JSON protocol:
/// what it sends and receives is JSON text, decoded here with JSONSerialization.
final class TestWebSocket: Sendable {
    /// The text messages received, shared with the connection's task.
    private final class Inbox: Sendable {
        let texts = Mutex<[String]>([])
    }

    private let inbox: Inbox
    private let outgoing: AsyncStream<String>.Continuation
    private let connection: Task<WebSocketCloseFrame?, any Error>

    private init(inbox: Inbox, outgoing: AsyncStream<String>.Continuation, connection: Task<WebSocketCloseFrame?, any Error>) {
        self.inbox = inbox
        self.outgoing = outgoing
        self.connection = connection
    }

    /// Connects to `/ws` of `base` with `token` as a Bearer header (or, with `tokenInQuery`, as `access_token`), and
    /// returns once the upgrade succeeded. An https `base` is reached over TLS trusting `authority` (a PEM file).
    static func connect(_ base: String, token: String?, tokenInQuery: Bool = false, authority: String? = nil) async throws -> TestWebSocket {
        let inbox = Inbox()
        let (outgoingTexts, outgoing) = AsyncStream<String>.makeStream()
        let (opened, openedContinuation) = AsyncStream<Void>.makeStream()
        var headers = HTTPFields()
        var url = base.replacingOccurrences(of: "http://", with: "ws://").replacingOccurrences(of: "https://", with: "wss://") + "/ws"
        var tls: TLSConfiguration?
        if let authority {
            tls = .makeClientConfiguration()
            tls?.trustRoots = .file(authority)
        }
        if let token {
            if tokenInQuery {
                url += "?access_token=\(token)"
            } else {
                headers[.authorization] = "Bearer \(token)"
            }
        }
        let configuration = WebSocketClientConfiguration(maxFrameSize: 1 << 20, additionalHeaders: headers)
        let socket = TestWebSocket(inbox: inbox, outgoing: outgoing, connection: Task {
            defer { openedContinuation.finish() }
            return try await WebSocketClient.connect(
                url: url, configuration: configuration, tlsConfiguration: tls, logger: Logger(label: "test-ws")
            ) {
                inbound, outbound, _ in
                openedContinuation.yield()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await text in outgoingTexts {
                            try await outbound.write(.text(text))
                        }
                        try await outbound.close(.normalClosure, reason: nil)
                    }
                    for try await message in inbound.messages(maxSize: 1 << 22) {
                        if case .text(let text) = message { inbox.texts.withLock { $0.append(text) } }
                    }
                    group.cancelAll()
                }
            }
        })
        var didOpen = false
        for await _ in opened {
            didOpen = true
            break
        }
        if !didOpen {
            _ = try await socket.connection.value
            throw TestWebSocketError("the WebSocket closed before it opened")
        }
        return socket
    }

    /// Sends one JSON message.
    func send(_ object: [String: Any]) throws {
        send(text: String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self))
    }

    func send(text: String) {
        outgoing.yield(text)
    }

    /// Every message received so far, decoded.
    var messages: [[String: Any]] {
        inbox.texts.withLock { $0 }.map { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] ?? ["unparsed": $0] }
    }

    /// Waits until `count` received messages match `filter`, and returns them in order.
    @discardableResult
    func waitForMessages(
        count: Int, timeout: Duration = .seconds(10), where filter: @escaping ([String: Any]) -> Bool = { _ in true }
    ) async throws -> [[String: Any]] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let matching = messages.filter(filter)
            if matching.count >= count { return matching }
            guard ContinuousClock.now < deadline else {
                throw TestWebSocketError("\(matching.count) of \(count) messages within \(timeout); got \(messages)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The frames (`event` messages) of `thread` received so far.
    func events(of thread: String) -> [[String: Any]] {
        messages.filter { $0["type"] as? String == "event" && $0["thread_id"] as? String == thread }
    }

    @discardableResult
    func waitForEvents(of thread: String, count: Int, timeout: Duration = .seconds(10)) async throws -> [[String: Any]] {
        try await waitForMessages(count: count, timeout: timeout) { $0["type"] as? String == "event" && $0["thread_id"] as? String == thread }
    }

    /// The reply to a request: the first message of `type` for `thread`.
    @discardableResult
    func waitForReply(_ type: String, thread: String, timeout: Duration = .seconds(10)) async throws -> [String: Any] {
        try await waitForMessages(count: 1, timeout: timeout) { $0["type"] as? String == type && $0["thread_id"] as? String == thread }[0]
    }

    /// Waits for an `error` message with `code` about `thread`.
    func waitForError(_ code: String, thread: String) async throws {
        try await waitForMessages(count: 1) {
            $0["type"] as? String == "error" && $0["code"] as? String == code && $0["thread_id"] as? String == thread
        }
    }

    /// Closes from the client's side (a close frame) and waits for the connection to end.
    func close() async {
        outgoing.finish()
        _ = try? await connection.value
    }

    /// Waits for the server to close the connection; its close frame, if it sent one.
    func waitForClose(timeout: Duration = .seconds(10)) async throws -> WebSocketCloseFrame? {
        let connection = self.connection
        return try await withThrowingTaskGroup(of: WebSocketCloseFrame?.self) { group in
            group.addTask { try await connection.value }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestWebSocketError("the server did not close the WebSocket within \(timeout)")
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
    }
}

struct TestWebSocketError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A WebSocket spoken byte by byte over a bare TCP connection, for what a well-behaved client library will not
/// do: unmasked, binary or oversized frames, never answering pings, never reading.
struct RawWebSocket {
    let connection: RawConnection

    struct Frame {
        let opcode: UInt8
        let payload: [UInt8]
        var text: String { String(decoding: payload, as: UTF8.self) }
        /// A close frame's status code.
        var closeCode: Int? { opcode == 0x8 && payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : nil }
    }

    /// Opens `/ws` on `port` with a Bearer `token` and returns after the `101`.
    static func open(port: Int, token: String, receiveBufferSize: Int? = nil) async throws -> RawWebSocket {
        let connection = try await RawConnection.open(port: port, receiveBufferSize: receiveBufferSize)
        try await connection.send(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer \(token)\r\n\r\n"
        )
        guard await connection.waitForReceived(containing: "\r\n\r\n", timeout: .seconds(10)),
              connection.received.hasPrefix("HTTP/1.1 101") else {
            throw TestWebSocketError("no 101: \(connection.received)")
        }
        return RawWebSocket(connection: connection)
    }

    /// Sends one frame; clients mask theirs (RFC 6455 §5.3), unless `masked` is false.
    func send(opcode: UInt8, _ payload: [UInt8], masked: Bool = true, fin: Bool = true) async throws {
        var frame: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        switch payload.count {
        case ..<126: frame.append(maskBit | UInt8(payload.count))
        case ..<65536: frame += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default: frame += [maskBit | 127] + (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        if masked {
            let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
            frame += mask
            frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        } else {
            frame += payload
        }
        try await connection.send(frame)
    }

    func send(text: String) async throws {
        try await send(opcode: 0x1, Array(text.utf8))
    }

    /// The server's frames received so far (they are never masked).
    var frames: [Frame] {
        var bytes = connection.receivedBytes
        guard let headEnd = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { return [] }
        bytes.removeSubrange(..<headEnd.upperBound)
        var frames: [Frame] = []
        var index = 0
        while index + 2 <= bytes.count {
            let opcode = bytes[index] & 0x0F
            var length = Int(bytes[index + 1] & 0x7F)
            var start = index + 2
            if length == 126 {
                guard start + 2 <= bytes.count else { break }
                length = Int(bytes[start]) << 8 | Int(bytes[start + 1])
                start += 2
            } else if length == 127 {
                guard start + 8 <= bytes.count else { break }
                length = bytes[start..<start + 8].reduce(0) { $0 << 8 | Int($1) }
                start += 8
            }
            guard start + length <= bytes.count else { break }
            frames.append(Frame(opcode: opcode, payload: Array(bytes[start..<start + length])))
            index = start + length
        }
        return frames
    }

    /// Waits for a frame matching `filter`.
    func waitForFrame(timeout: Duration = .seconds(10), where filter: (Frame) -> Bool) async throws -> Frame {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let frame = frames.first(where: filter) { return frame }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestWebSocketError("no such frame within \(timeout); got \(frames.map { ($0.opcode, $0.text) })")
    }
}
