import Foundation
import HeraldTestSupport
import Testing

/// Connection exhaustion and the HTTP layer itself, on raw sockets against a real node: timeouts are set short
/// here, and every wait has a generous deadline (the assertions are about what happens, not how fast).
@Suite("connection limits: timeouts, the cap, malformed heads", .serialized, .timeLimit(.minutes(3)))
struct ConnectionLimitTests {
    static let partialHead = "GET /healthz HTTP/1.1\r\nHost: x\r\n"

    static func closedCount(_ api: API, _ reason: String) async throws -> Double {
        try await api.metric(#"herald_connections_closed_total{reason="\#(reason)"}"#) ?? 0
    }

    @Test("slowloris: partial heads and silent connections are closed after the header timeout; a silent stream lives on")
    func slowloris() async throws {
        let environment = ["HERALD_HEADER_TIMEOUT_SECONDS": "1", "HERALD_BODY_TIMEOUT_SECONDS": "1", "HERALD_IDLE_TIMEOUT_SECONDS": "1"]
        try await withStack(environment: environment) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let opened = ContinuousClock.now

            var attackers: [RawConnection] = []
            for index in 0..<60 {
                let connection = try await RawConnection.open(port: stack.node.port)
                // Every fourth sends no byte at all. On a loaded machine the server may have closed a connection (its
                // header timeout is 1 s) before the partial head goes out: the outcome this test waits for anyway.
                if index % 4 != 0 { try? await connection.send(Self.partialHead) }
                attackers.append(connection)
            }
            for (index, connection) in attackers.enumerated() {
                #expect(await connection.waitForClose(timeout: .seconds(15)), "attacker \(index) still open")
                #expect(connection.received.isEmpty, "attacker \(index) got \(connection.received)")
            }
            #expect(try await Self.closedCount(api, "header") >= 60)

            // The stream's client has sent nothing since its request, for longer than every timeout.
            let silence = ContinuousClock.now - opened
            if silence < .seconds(3) { try await Task.sleep(for: .seconds(3) - silence) }
            _ = try await api.send(thread, "still there?")
            let events = try await stream.waitForEvents(count: 1)
            #expect(events[0].type == "message_update")
            #expect(!stream.isEnded)
        }
    }

    @Test("an idle keep-alive connection is closed after the idle timeout; a second request before it is served")
    func idleKeepAlive() async throws {
        try await withStack(environment: ["HERALD_IDLE_TIMEOUT_SECONDS": "2"]) { stack in
            let api = stack.api()
            let connection = try await RawConnection.open(port: stack.node.port)
            try await connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(await connection.waitForReceived(containing: "HTTP/1.1 200", timeout: .seconds(10)))
            try await connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try await eventually("the second response") { connection.received.components(separatedBy: "HTTP/1.1 200").count == 3 }
            #expect(!connection.isClosed)

            #expect(await connection.waitForClose(timeout: .seconds(15)))
            #expect(try await Self.closedCount(api, "idle") >= 1)
        }
    }

    @Test("a request answered before its body arrived: once the body is in, the connection is idle and closed")
    func answeredBeforeBody() async throws {
        try await withStack(environment: ["HERALD_IDLE_TIMEOUT_SECONDS": "1"]) { stack in
            let api = stack.api()
            let connection = try await RawConnection.open(port: stack.node.port)
            // No token: refused before the body is read.
            try await connection.send("POST /chats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n")
            #expect(await connection.waitForReceived(containing: "HTTP/1.1 401", timeout: .seconds(10)))
            try await connection.send("{}")
            #expect(await connection.waitForClose(timeout: .seconds(15)))
            #expect(try await Self.closedCount(api, "idle") >= 1)
        }
    }

    @Test("a body trickling in is cut at the body timeout and nothing is stored")
    func slowBody() async throws {
        try await withStack(environment: ["HERALD_BODY_TIMEOUT_SECONDS": "1"]) { stack in
            let api = stack.api()
            let token = try #require(stack.tokens["alice"])
            // A complete JSON object at once, then trailing spaces a byte every 300 ms (8 s for all of them): a body
            // cut at the timeout and taken for complete would create the thread.
            let json = #"{"title":"trickled-title"}"#
            let padding = 25
            let connection = try await RawConnection.open(port: stack.node.port)
            try await connection.send(
                "POST /chats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\n"
                    + "Content-Length: \(json.utf8.count + padding)\r\n\r\n\(json)"
            )
            let trickle = Task {
                for _ in 0..<padding {
                    try await Task.sleep(for: .milliseconds(300))
                    try await connection.send(" ")
                }
            }
            #expect(await connection.waitForClose(timeout: .seconds(15)))
            trickle.cancel()
            #expect(!connection.received.contains("201"), "\(connection.received)")
            #expect(try await Self.closedCount(api, "body") >= 1)
            let threads = try await api.request("GET", "/chats")
            #expect(threads.status == 200)
            #expect(!threads.text.contains("trickled-title"))
        }
    }

    @Test("the cap: excess refused at once with 503, streams and /healthz go on, new connections accepted after")
    func connectionCap() async throws {
        let environment = ["HERALD_MAX_CONNECTIONS": "3", "HERALD_HEADER_TIMEOUT_SECONDS": "60", "HERALD_HEARTBEAT_SECONDS": "0.5"]
        try await withStack(environment: environment) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            // The stream, and the metrics request itself.
            try await eventually("only the stream is open") { try await api.metric("herald_connections_open") == 2 }

            // Two idle connections fill the cap of 3 together with the stream.
            var held: [RawConnection] = []
            for _ in 0..<2 { held.append(try await RawConnection.open(port: stack.node.port)) }

            // At the cap, a new connection lands in the operators' reserve: /healthz yes, the API no.
            let health = try await TestHTTPClient.request("GET", "\(stack.url)/healthz")
            #expect(health.status == 200)
            let refusedAPI = try await api.request("GET", "/chats")
            #expect(refusedAPI.status == 503, "\(refusedAPI.text)")
            #expect(refusedAPI.header("Retry-After") == "5")
            #expect(refusedAPI.text.contains(#""code":"over_capacity""#))

            // Beyond the reserve of 8: answered with a 503 and closed without sending anything.
            for _ in 0..<12 { held.append(try await RawConnection.open(port: stack.node.port)) }
            let excess = held.suffix(12)
            try await eventually("12 connections over a cap of 3 + 8: at least 4 refused") { excess.filter(\.isClosed).count >= 4 }
            let refused = excess.filter(\.isClosed)
            for connection in refused {
                #expect(connection.received.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), "\(connection.received)")
                #expect(connection.received.contains("Retry-After: 5\r\n"))
                #expect(connection.received.contains(#""code":"over_capacity""#))
            }
            #expect(held.prefix(2).allSatisfy { !$0.isClosed })

            // The stream is still served while the node is full: heartbeats keep coming.
            let heartbeats = stream.comments.filter { $0.contains("heartbeat") }.count
            try await eventually("a heartbeat while at the cap") {
                stream.comments.filter { $0.contains("heartbeat") }.count > heartbeats
            }

            for connection in held { await connection.close() }
            try await eventually("the API is served again") { try await api.request("GET", "/chats").status == 200 }
            #expect(try await api.metric("herald_connections_refused_total") ?? 0 >= Double(refused.count))
            _ = try await api.send(thread, "after the flood")
            let events = try await stream.waitForEvents(count: 1)
            #expect(events[0].type == "message_update")
        }
    }

    @Test("a node's descriptor table is grown for its connection cap when it starts, so that a connection storm never waits for it to grow")
    func descriptorTableSizedAtStart() async throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        try #require(limit.rlim_cur > 4096, "this test needs a descriptor limit above 4 096 (ulimit -n)")
        try await withStack(environment: ["HERALD_MAX_CONNECTIONS": "3000"]) { stack in
            // The cap, the operators' reserve of 8 and 512 of the node's own; a table that had only grown with the
            // node's descriptors would hold 64 to 256.
            let status = try String(contentsOfFile: "/proc/\(stack.node.process.pid)/status", encoding: .utf8)
            let size = status.split(separator: "\n").first { $0.hasPrefix("FDSize:") }.flatMap { Int($0.dropFirst(7).trimmingCharacters(in: .whitespaces)) }
            #expect(try #require(size) >= 3520, "\(status)")
            #expect(try await stack.api().request("GET", "/healthz").status == 200)
        }
    }

    @Test("the operations listener answers probes while the public listener is full, and serves nothing else")
    func operationsListener() async throws {
        let operationsPort = freeTCPPort()
        let environment = ["HERALD_MAX_CONNECTIONS": "1", "HERALD_HEADER_TIMEOUT_SECONDS": "60", "HERALD_OPERATIONS_PORT": String(operationsPort)]
        try await withStack(environment: environment) { stack in
            let operations = "http://127.0.0.1:\(operationsPort)"
            // The cap of 1 and the reserve of 8 taken by connections that send nothing, and more refused.
            var held: [RawConnection] = []
            for _ in 0..<12 { held.append(try await RawConnection.open(port: stack.node.port)) }
            try await eventually("connections refused") { held.contains(where: \.isClosed) }
            let publicHealth = try await RawConnection.open(port: stack.node.port)
            #expect(await publicHealth.waitForReceived(containing: "HTTP/1.1 503", timeout: .seconds(10)))

            let health = try await TestHTTPClient.request("GET", "\(operations)/healthz")
            #expect(health.status == 200)
            let metrics = try await TestHTTPClient.request("GET", "\(operations)/metrics")
            #expect(metrics.text.contains("herald_connections_refused_total"))
            let api = try await TestHTTPClient.request("GET", "\(operations)/chats")
            #expect(api.status == 404)
            for connection in held { await connection.close() }
        }
    }

    @Test("a second node started on a node's port fails with 'address in use' instead of sharing it; the first serves on")
    func portTaken() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")

            let second = try ChildProcess.start(builtProduct("herald"), ["serve"], environment: stack.node.environment)
            let status = try await second.waitForExit(timeout: .seconds(30))
            #expect(status != 0)
            #expect(second.log().contains("Address already in use"), "\(second.logTail())")

            // Every connection still reaches the first node (none was accepted by the second while it lived).
            for _ in 0..<20 { #expect(try await api.request("GET", "/healthz").status == 200) }
            _ = try await api.send(thread, "after the second node")
            let events = try await stream.waitForEvents(count: 1)
            #expect(events[0].type == "message_update")
        }
    }

    @Test("malformed heads get JSON: 431 for an oversized head, 405 for an unknown method, 400 for CL with TE")
    func malformedHeads() async throws {
        try await withStack { stack in
            let api = stack.api()
            let token = try #require(stack.tokens["alice"])

            let bigHeader = try await api.request("GET", "/chats", headers: [("X-Junk", String(repeating: "j", count: 200_000))])
            #expect(bigHeader.status == 431)
            #expect((try? api.json(bigHeader))?["error"] as? [String: String] == [
                "code": "request_header_too_large", "message": "the request head is larger than 80 KiB",
            ])

            let unknown = try await RawConnection.open(port: stack.node.port)
            try await unknown.send("BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(await unknown.waitForClose(timeout: .seconds(10)))
            #expect(unknown.received.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"), "\(unknown.received)")
            #expect(unknown.received.contains(#""code":"method_not_allowed""#))

            // The chunked body ends at once; a server that believed Content-Length would read the next request
            // from inside it.
            let smuggled = #"{"title":"smuggled"}"#
            let authorized = "Host: x\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\n"
            let smuggling = try await RawConnection.open(port: stack.node.port)
            try await smuggling.send(
                "POST /chats HTTP/1.1\r\n\(authorized)Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                    + "POST /chats HTTP/1.1\r\n\(authorized)Content-Length: \(smuggled.utf8.count)\r\n\r\n\(smuggled)"
            )
            #expect(await smuggling.waitForClose(timeout: .seconds(10)))
            #expect(smuggling.received.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(smuggling.received)")
            #expect(smuggling.received.components(separatedBy: "HTTP/1.1 ").count == 2, "one response only: \(smuggling.received)")
            #expect(smuggling.received.contains(#""code":"malformed_request""#))
            let threads = try await api.request("GET", "/chats")
            #expect(threads.status == 200)
            #expect(!threads.text.contains("smuggled"))
            #expect(stack.node.process.isRunning)
        }
    }

    @Test("HTTP/1.0 is answered and closed; pipelined requests are answered in order")
    func http10AndPipelining() async throws {
        try await withStack { stack in
            let old = try await RawConnection.open(port: stack.node.port)
            try await old.send("GET /healthz HTTP/1.0\r\n\r\n")
            #expect(await old.waitForClose(timeout: .seconds(5)))
            #expect(old.received.hasPrefix("HTTP/1.") && old.received.contains(" 200 OK\r\n"), "\(old.received)")

            let pipelined = try await RawConnection.open(port: stack.node.port)
            try await pipelined.send(
                "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            #expect(await pipelined.waitForClose(timeout: .seconds(10)))
            let statuses = pipelined.received.matches(of: /HTTP\/1\.1 (\d{3})/).map { String($0.output.1) }
            #expect(statuses == ["200", "404", "200"], "\(pipelined.received)")
        }
    }
}
