import Foundation
import HeraldTestSupport
import Testing

/// HTTPS on the client listener (`HERALD_TLS_CERT_FILE`, `HERALD_TLS_KEY_FILE`), checked with curl (OpenSSL's TLS,
/// not Herald's) and swift-websocket's client.
@Suite("HTTPS listener: REST, SSE and WebSocket over TLS, certificate reload on SIGHUP", .serialized, .timeLimit(.minutes(3)))
struct ServerTLSTests {
    /// curl's exit status and what it printed.
    @discardableResult
    static func curl(_ arguments: [String], timeout: Duration = .seconds(20)) async throws -> (status: Int32, output: String) {
        let process = try ChildProcess.start("/usr/bin/curl", ["-sS"] + arguments)
        let status = try await process.waitForExit(timeout: timeout)
        return (status, process.log())
    }

    /// A stream read by curl until `seconds` have passed, in the background.
    static func stream(_ url: String, token: String, authority: String, seconds: Int) throws -> ChildProcess {
        try ChildProcess.start("/usr/bin/curl", ["-sN", "--cacert", authority, "-H", "Authorization: Bearer \(token)", "--max-time", String(seconds), url])
    }

    static func events(in text: String) -> [SSEEvent] {
        var parser = SSEParser()
        return parser.feed(Array(text.utf8)).compactMap { if case .event(let event) = $0 { event } else { nil } }
    }

    static let fullRun = ["message_update", "run_status", "run_status", "delta", "delta", "delta", "message_update", "run_status"]

    func send(_ stack: Stack, _ thread: String, _ content: String, authority: String) async throws {
        let token = try #require(stack.tokens["alice"])
        let sent = try await Self.curl([
            "--cacert", authority, "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(token)",
            "-H", "Content-Type: application/json", "-d", #"{"content":"\#(content)"}"#, "\(stack.url)/chats/\(thread)/send",
        ])
        #expect(sent.output == "202", "send: \(sent)")
    }

    func createThread(_ stack: Stack, authority: String) async throws -> String {
        let token = try #require(stack.tokens["alice"])
        let created = try await Self.curl([
            "--cacert", authority, "-X", "POST", "-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/json",
            "-d", #"{"title":"tls"}"#, "\(stack.url)/chats",
        ])
        let object = try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [String: Any]
        return try #require(object?["id"] as? String, "create: \(created)")
    }

    @Test("REST, an SSE stream and a WebSocket over HTTPS; plain HTTP and an unknown CA are refused")
    func everythingOverTLS() async throws {
        let certificates = try TestCertificates.make()
        let stranger = try TestCertificates.make()
        try await withStack(serverTLS: certificates) { stack in
            let authority = certificates.authority
            #expect(stack.url.hasPrefix("https://localhost:"))
            let health = try await Self.curl(["--cacert", authority, "-o", "/dev/null", "-w", "%{http_code} %{http_version} %{scheme}", "\(stack.url)/healthz"])
            #expect(health.output == "200 1.1 HTTPS", "\(health)")

            let thread = try await createThread(stack, authority: authority)
            let token = try #require(stack.tokens["alice"])
            let stream = try Self.stream("\(stack.url)/chats/sse/\(thread)", token: token, authority: authority, seconds: 4)
            let socket = try await TestWebSocket.connect(stack.url, token: token, authority: authority)
            try socket.send(["type": "subscribe", "thread_id": thread])
            try await socket.waitForReply("subscribed", thread: thread)
            try await eventually("the stream is connected") { stream.log().contains(": connected") }

            try await send(stack, thread, "secure channel", authority: authority)
            let overSocket = try await socket.waitForEvents(of: thread, count: Self.fullRun.count)
            _ = try await stream.waitForExit(timeout: .seconds(10))
            let overStream = Self.events(in: stream.log())
            #expect(overStream.map(\.type) == Self.fullRun)
            #expect(overSocket.compactMap { $0["id"] as? String } == overStream.map(\.lastEventID))
            await socket.close()

            // Plain HTTP to the TLS port gets no HTTP answer; a client that does not trust the CA gets no connection.
            let plain = try await Self.curl(["-o", "/dev/null", "-w", "%{http_code}", "http://localhost:\(stack.node.port)/healthz"])
            #expect(plain.status != 0 && plain.output.contains("000"), "\(plain)")
            let untrusted = try await Self.curl(["--cacert", stranger.authority, "\(stack.url)/healthz"])
            #expect(untrusted.status == 60, "\(untrusted)")
        }
    }

    @Test("SIGHUP loads a renewed certificate for new connections; an open stream goes on; a broken file keeps the old one")
    func reloadOnSIGHUP() async throws {
        let certificates = try TestCertificates.make()
        let renewed = try TestCertificates.make()
        try await withStack(serverTLS: certificates) { stack in
            let original = certificates.authority
            let thread = try await createThread(stack, authority: original)
            let token = try #require(stack.tokens["alice"])
            let stream = try Self.stream("\(stack.url)/chats/sse/\(thread)", token: token, authority: original, seconds: 6)
            try await eventually("the stream is connected") { stream.log().contains(": connected") }

            // The renewed certificate (of another CA) replaces the files the node was started with.
            for (from, to) in [(renewed.serverCertificate, certificates.serverCertificate), (renewed.serverKey, certificates.serverKey)] {
                try Data(contentsOf: URL(fileURLWithPath: from)).write(to: URL(fileURLWithPath: to))
            }
            stack.node.process.signal(SIGHUP)
            try await eventually("new connections get the renewed certificate") {
                try await Self.curl(["--cacert", renewed.authority, "-o", "/dev/null", "\(stack.url)/healthz"]).status == 0
            }
            #expect(try await Self.curl(["--cacert", original, "\(stack.url)/healthz"]).status == 60)
            #expect(stack.node.process.log().contains("TLS certificate reloaded"))

            // The stream opened with the old certificate still gets the thread's frames: those of the send (the engine
            // trusts only the original CA, so its callbacks to the renewed certificate fail and the run goes no further).
            try await send(stack, thread, "after renewal", authority: renewed.authority)
            _ = try await stream.waitForExit(timeout: .seconds(10))
            #expect(Self.events(in: stream.log()).map(\.type) == Array(Self.fullRun.prefix(3)))

            // A certificate file that does not load is refused; the node keeps serving the one it has.
            try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: certificates.serverCertificate))
            stack.node.process.signal(SIGHUP)
            try await eventually("the failed reload is logged") { stack.node.process.log().contains("TLS certificate NOT reloaded") }
            #expect(try await Self.curl(["--cacert", renewed.authority, "-o", "/dev/null", "\(stack.url)/healthz"]).status == 0)
        }
    }
}
