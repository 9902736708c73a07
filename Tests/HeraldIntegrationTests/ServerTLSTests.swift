import Foundation
import HeraldTestSupport
import Testing

/// HTTPS on the client listener (`HERALD_TLS_CERT_FILE`, `HERALD_TLS_KEY_FILE`), checked with curl (OpenSSL's TLS,
/// not Herald's) and swift-websocket's client.
@Suite("HTTPS listener: REST, SSE and WebSocket over TLS, HTTP/2, certificate reload on SIGHUP", .serialized, .timeLimit(.minutes(3)))
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
            // ALPN: HTTP/2 when the client offers it, HTTP/1.1 for one that does not.
            let health = try await Self.curl(["--cacert", authority, "-o", "/dev/null", "-w", "%{http_code} %{http_version} %{scheme}", "\(stack.url)/healthz"])
            #expect(health.output == "200 2 HTTPS", "\(health)")
            let http1 = try await Self.curl(["--http1.1", "--cacert", authority, "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "\(stack.url)/healthz"])
            #expect(http1.output == "200 1.1", "\(http1)")

            let thread = try await createThread(stack, authority: authority)
            let token = try #require(stack.tokens["alice"])
            // The stream over HTTP/1.1 (the WebSocket is HTTP/1.1 by nature; HTTP/2 streams have tests of their own).
            let stream = try ChildProcess.start("/usr/bin/curl", [
                "-sN", "--http1.1", "--cacert", authority, "-H", "Authorization: Bearer \(token)", "--max-time", "4",
                "\(stack.url)/chats/sse/\(thread)",
            ])
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

    /// `/metrics` of the node's plain operations listener.
    func metric(_ stack: Stack, _ name: String) async throws -> Double? {
        try await API("http://127.0.0.1:\(try #require(stack.node.environment["HERALD_OPERATIONS_PORT"]))", token: nil).metric(name)
    }

    func numsub(_ stack: Stack, _ thread: String) async throws -> String? {
        try await stack.redis.command("PUBSUB", "NUMSUB", "sse:thread:\(thread)").split(separator: "\n").last.map(String.init)
    }

    @Test("HTTP/2: 20 event streams over one connection (curl), each with its own thread's frames")
    func twentyStreamsOneConnection() async throws {
        let certificates = try TestCertificates.make()
        try await withStack(environment: ["HERALD_MAX_STREAMS_PER_USER": "50"], serverTLS: certificates) { stack in
            let authority = certificates.authority
            let token = try #require(stack.tokens["alice"])
            var threads: [String] = []
            for _ in 0..<20 { threads.append(try await createThread(stack, authority: authority)) }
            let directory = NSTemporaryDirectory() + "herald-h2-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            // One curl, 20 transfers in parallel, multiplexed on one HTTP/2 connection; each transfer's output in its file.
            let streams = try ChildProcess.start("/usr/bin/curl", [
                "-sN", "--http2", "--parallel", "--parallel-max", "20", "--cacert", authority, "-H", "Authorization: Bearer \(token)",
                "--max-time", "8", "-w", "%{num_connects} %{http_version} %{http_code}\\n", "-o", "\(directory)/#1",
                "\(stack.url)/chats/sse/{\(threads.joined(separator: ","))}",
            ])
            func output(_ thread: String) -> String { (try? String(contentsOfFile: "\(directory)/\(thread)", encoding: .utf8)) ?? "" }
            try await eventually("all 20 streams connected") { threads.allSatisfy { output($0).contains(": connected") } }
            #expect(try await metric(stack, "herald_sse_connections") == 20)

            let sends = try await Self.curl([
                "--http2", "--parallel", "--cacert", authority, "-X", "POST", "-H", "Authorization: Bearer \(token)",
                "-H", "Content-Type: application/json", "-d", #"{"content":"multiplexed hello"}"#, "-o", "/dev/null", "-w", "%{http_code}\\n",
                "\(stack.url)/chats/{\(threads.joined(separator: ","))}/send",
            ])
            #expect(sends.output.split(separator: "\n").filter { $0 == "202" }.count == 20, "\(sends)")
            _ = try await streams.waitForExit(timeout: .seconds(15))

            for thread in threads {
                let events = Self.events(in: output(thread))
                #expect(events.map(\.type) == Self.fullRun, "thread \(thread)")
                #expect(events.allSatisfy { $0.data.contains(#""thread_id":"\#(thread)""#) })
            }
            // Every transfer reports how many connections it opened: one among the 20, all HTTP/2.
            let transfers = streams.log().split(separator: "\n").map { $0.split(separator: " ") }.filter { $0.count == 3 }
            #expect(transfers.count == 20, "\(streams.log())")
            #expect(transfers.map { Int($0[0]) ?? -1 }.reduce(0, +) == 1, "\(streams.log())")
            #expect(transfers.allSatisfy { $0[1] == "2" && $0[2] == "200" })
        }
    }

    @Test("HTTP/2: a stream reset by the client (RST_STREAM) is cleaned up; the other streams of the connection go on, heartbeats too")
    func resetOneStream() async throws {
        let certificates = try TestCertificates.make()
        try await withStack(environment: ["HERALD_HEARTBEAT_SECONDS": "0.5"], serverTLS: certificates) { stack in
            let authority = certificates.authority
            var threads: [String] = []
            for _ in 0..<3 { threads.append(try await createThread(stack, authority: authority)) }
            let client = try await Self.h2Client("reset", stack: stack, authority: authority, threads: threads)
            try await eventually("the client has reset its first stream") { client.log().contains("reset") }
            try await eventually("the reset stream is gone: registry and NUMSUB") {
                let open = try await metric(stack, "herald_sse_connections")
                let subscribers = try await numsub(stack, threads[0])
                return open == 2 && subscribers == "0"
            }
            #expect(try await numsub(stack, threads[1]) == "1")
            #expect(try await numsub(stack, threads[2]) == "1")
            for thread in threads.dropFirst() { try await send(stack, thread, "still streaming", authority: authority) }
            #expect(try await client.waitForExit(timeout: .seconds(15)) == 0, "\(client.log())")

            let report = try #require(client.log().split(separator: "\n").last)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(report.utf8)) as? [String: Any])
            #expect(object["status"] as? [String] == ["200", "200", "200"])
            let received = try #require(object["received"] as? [String])
            for (thread, text) in zip(threads.dropFirst(), received.dropFirst()) {
                let events = Self.events(in: text)
                #expect(events.map(\.type) == Self.fullRun, "thread \(thread)")
                #expect(text.contains(": heartbeat"), "thread \(thread)")
            }
            try await eventually("every stream gone once the client left") { try await metric(stack, "herald_sse_connections") == 0 }
        }
    }

    @Test("HTTP/2: a stream whose client stops reading is cut as a slow consumer; its neighbour on the connection is not held up")
    func slowStreamAlone() async throws {
        let certificates = try TestCertificates.make()
        let environment = ["HERALD_STREAM_QUEUE_BYTES": "65536", "HERALD_MAX_CONTENT_BYTES": "65536"]
        try await withStack(environment: environment, serverTLS: certificates) { stack in
            let authority = certificates.authority
            let threads = [try await createThread(stack, authority: authority), try await createThread(stack, authority: authority)]
            let client = try await Self.h2Client("stall", stack: stack, authority: authority, threads: threads, seconds: 6)
            try await eventually("the client stalls its first stream") { client.log().contains("stalled") }
            // 60 KiB messages to the stalled stream's thread: its 64 KiB window fills, then Herald's 64 KiB queue.
            let big = String(repeating: "x", count: 60_000)
            let cut = #"herald_sse_disconnects_total{reason="slow_consumer"}"#
            for _ in 0..<6 where try await metric(stack, cut) != 1 {
                try await send(stack, threads[0], "[[silent]] \(big)", authority: authority)
            }
            try await eventually("the stalled stream is cut as a slow consumer") { try await metric(stack, cut) == 1 }
            try await send(stack, threads[1], "fast lane", authority: authority)
            #expect(try await client.waitForExit(timeout: .seconds(15)) == 0, "\(client.log())")

            let report = try #require(client.log().split(separator: "\n").last)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(report.utf8)) as? [String: Any])
            #expect(object["reset_by_server"] as? [Bool] == [true, false])
            let received = try #require(object["received"] as? [String])
            #expect(Self.events(in: received[1]).map(\.type) == Self.fullRun)
        }
    }

    /// Tests/HTTP2/h2_client.py in `mode` against the node, on `threads`, reading for `seconds` after it acted.
    static func h2Client(_ mode: String, stack: Stack, authority: String, threads: [String], seconds: Int = 4) async throws -> ChildProcess {
        let venv = try await h2Venv()
        let token = try #require(stack.tokens["alice"])
        return try ChildProcess.start(
            "\(venv)/bin/python",
            ["\(packageRoot())/Tests/HTTP2/h2_client.py", mode, "localhost", String(stack.node.port), authority, token, String(seconds)] + threads
        )
    }

    /// The cached virtualenv with the h2 library (Tests/HTTP2/requirements.txt).
    static func h2Venv() async throws -> String {
        let script = try ChildProcess.start(
            "/bin/bash", ["\(packageRoot())/scripts/python-venv.sh", "h2", "\(packageRoot())/Tests/HTTP2/requirements.txt"]
        )
        let status = try await script.waitForExit(timeout: .seconds(600))
        guard status == 0, let venv = script.log().split(separator: "\n").first(where: { $0.hasPrefix("/") }).map(String.init) else {
            throw ChildProcessError("scripts/python-venv.sh h2 failed: \(script.log())")
        }
        return venv
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
