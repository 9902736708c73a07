import Foundation
import HeraldCore
import HeraldTestSupport
import Testing

/// Streams and webhooks run by `RequestHandoff`, over raw connections so that the bytes and their order are the
/// server's own.
@Suite("request handoff: streams and webhooks on fresh and reused connections, errors, order", .timeLimit(.minutes(2)))
struct RequestHandoffTests {
    @Test("a stream asked for after another request on a keep-alive connection: frames, and its end closes the connection")
    func streamAfterRequestOnSameConnection() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let authorization = "Authorization: Bearer \(try #require(api.token))\r\n"
            let connection = try await RawConnection.open(port: stack.node.port)
            try await connection.send("GET /chats HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n")
            #expect(await connection.waitForReceived(containing: "application/json", timeout: .seconds(10)))
            try await connection.send("GET /chats/sse/\(thread) HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n")
            #expect(await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)))

            _ = try await api.send(thread, "[[silent]] over a reused connection")
            #expect(await connection.waitForReceived(containing: "over a reused connection", timeout: .seconds(10)))

            let deleted = try await api.request("DELETE", "/chats/\(thread)")
            #expect(deleted.status == 204)
            #expect(await connection.waitForReceived(containing: "event: thread_deleted", timeout: .seconds(10)))
            // The stream's end ends its response (the last chunk) and the connection.
            #expect(await connection.waitForClose(timeout: .seconds(10)))
            #expect(connection.received.hasSuffix("0\r\n\r\n"))
        }
    }

    @Test("a stream pipelined behind another request: the responses keep the requests' order")
    func pipelinedStream() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let authorization = "Authorization: Bearer \(try #require(api.token))\r\n"
            let connection = try await RawConnection.open(port: stack.node.port)
            try await connection.send(
                "GET /chats HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n"
                    + "GET /chats/sse/\(thread) HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n"
            )
            #expect(await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)))
            let text = connection.received
            let list = try #require(text.range(of: "application/json"))
            let stream = try #require(text.range(of: "text/event-stream"))
            #expect(list.lowerBound < stream.lowerBound)
            #expect(text.components(separatedBy: "HTTP/1.1 200 OK\r\n").count == 3)
            _ = try await api.send(thread, "[[silent]] behind a pipelined request")
            #expect(await connection.waitForReceived(containing: "behind a pipelined request", timeout: .seconds(10)))
            await connection.close()
        }
    }

    @Test("an HTTP/1.0 client gets its stream unchunked, ended by the close")
    func http10Stream() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let connection = try await RawConnection.open(port: stack.node.port)
            try await connection.send("GET /chats/sse/\(thread) HTTP/1.0\r\nAuthorization: Bearer \(try #require(api.token))\r\n\r\n")
            #expect(await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)))
            _ = try await api.send(thread, "[[silent]] to an old client")
            #expect(await connection.waitForReceived(containing: "to an old client", timeout: .seconds(10)))
            let text = connection.received
            #expect(text.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(text)")
            #expect(!text.lowercased().contains("transfer-encoding"))
            // The body is the frames themselves: the head's blank line, then the preamble, no chunk sizes.
            #expect(text.contains("\r\n\r\nretry: 3000\n: connected\n\n"))
            #expect(text.contains("\n\nid: "))
            #expect(!text.contains("\r\nid: "))
            await connection.close()
        }
    }

    @Test("a stream request as a connection's first that fails gets its JSON error and the connection closes")
    func failedStreamAsFirstRequest() async throws {
        try await withStack { stack in
            let api = stack.api()
            let authorization = "Authorization: Bearer \(try #require(api.token))\r\n"
            let unknown = try await RawConnection.open(port: stack.node.port)
            try await unknown.send("GET /chats/sse/\(UUID()) HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n")
            #expect(await unknown.waitForClose(timeout: .seconds(10)))
            #expect(unknown.received.hasPrefix("HTTP/1.1 404 Not Found\r\n"), "\(unknown.received)")
            #expect(unknown.received.contains(#""code":"not_found""#))

            let anonymous = try await RawConnection.open(port: stack.node.port)
            try await anonymous.send("GET /chats/sse/\(UUID()) HTTP/1.1\r\nHost: herald\r\n\r\n")
            #expect(await anonymous.waitForClose(timeout: .seconds(10)))
            #expect(anonymous.received.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"), "\(anonymous.received)")

            // A connection that asked nothing and leaves is forgotten at once: no task waits for its request.
            let silent = try await RawConnection.open(port: stack.node.port)
            await silent.close()
            try await eventually("every connection closed") { try await api.metric("herald_connections_open") == 1 }
        }
    }

    @Test("webhooks on one keep-alive connection, one by one and pipelined: answered in order, delivered in order; the connection then serves other requests too")
    func webhooksOnKeepAliveConnection() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let sent = try await api.send(thread, "[[silent]] webhooks over one connection")
            try await eventually("the run is running") { try await stack.logLength(thread) == 3 }
            let stream = try await api.openStream(thread)
            let connection = try await RawConnection.open(port: stack.node.port)

            try await connection.send(try Self.signedDelta(run: sent.run, index: 0))
            #expect(await connection.waitForReceived(containing: #"{"status":"accepted"}"#, timeout: .seconds(10)))
            // Two more in one write, then a repeat of the first.
            try await connection.send(try Self.signedDelta(run: sent.run, index: 1) + Self.signedDelta(run: sent.run, index: 2))
            try await connection.send(try Self.signedDelta(run: sent.run, index: 1))
            try await eventually("four answers") { Self.answers(connection.received).count == 4 }
            #expect(Self.answers(connection.received).map(\.body) == [
                #"{"status":"accepted"}"#, #"{"status":"accepted"}"#, #"{"status":"accepted"}"#, #"{"status":"duplicate"}"#,
            ])
            #expect(Self.answers(connection.received).allSatisfy { $0.head.hasPrefix("HTTP/1.1 200 OK\r\n") })
            #expect(Self.answers(connection.received).allSatisfy { $0.head.lowercased().contains("server: herald") })
            #expect(!connection.isClosed)

            // Something the handoff does not run, on the same connection (Hummingbird's from now on), then a webhook.
            try await connection.send("GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
            try await eventually("the health answer") { Self.answers(connection.received).count == 5 }
            #expect(Self.answers(connection.received)[4].body.contains("ok"))
            // Served by Hummingbird behind Herald's own listener: its `Server` and `Date` headers.
            let health = Self.answers(connection.received)[4].head.lowercased()
            #expect(health.contains("\r\nserver: herald"), "\(health)")
            let date = try #require(health.split(separator: "\r\n").first { $0.hasPrefix("date: ") }?.dropFirst(6))
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
            let dated = try #require(formatter.date(from: String(date).capitalized.replacingOccurrences(of: "Gmt", with: "GMT")))
            #expect(abs(dated.timeIntervalSinceNow) < 60)
            try await connection.send(try Self.signedDelta(run: sent.run, index: 3))
            try await eventually("the last answer") { Self.answers(connection.received).count == 6 }
            #expect(Self.answers(connection.received)[5].body == #"{"status":"accepted"}"#)
            // To the callback URL Herald handed out, as engines post (signed: its token is not needed) …
            try await connection.send(try Self.signedDelta(run: sent.run, index: 4, query: "?run_id=\(sent.run)&token=unused"))
            // … and one whose URL names another run than its body: refused, by the router.
            try await connection.send(try Self.signedDelta(run: sent.run, index: 5, query: "?run_id=\(UUID().uuidString.lowercased())"))
            try await eventually("the callback URL answers") { Self.answers(connection.received).count == 8 }
            #expect(Self.answers(connection.received)[6].body == #"{"status":"accepted"}"#)
            #expect(Self.answers(connection.received)[7].head.hasPrefix("HTTP/1.1 422 "), "\(connection.received)")

            try await stream.waitForDelta(4)
            try await Task.sleep(for: .milliseconds(200))
            #expect(stream.events.compactMap(\.deltaIndex) == [0, 1, 2, 3, 4])
            #expect(!connection.isClosed)
            await connection.close()
            // Each accepted one was a signed delta of a run this node created, answered on the loop, except the first:
            // this Redis had not run the delta script yet, so the router's way loaded it.
            #expect(try await api.metric("herald_webhooks_answered_on_loop_total") == 5)
            // Counted and timed like the router's requests.
            let scrape = try await PrometheusScrape.scrape(stack.url)
            let answered = ["route": "/webhook/chat-response", "status": "200"]
            #expect(scrape.total("herald_http_requests_total", answered) == 6)
            #expect(scrape.total("herald_http_request_duration_seconds_count", answered) == 6)
            #expect(scrape.total("herald_http_requests_total", ["route": "/webhook/chat-response", "status": "422"]) == 1)
        }
    }

    @Test("a delta the loop cannot answer goes through the router: an unknown run, a script Redis forgot, a large body, a run another node created")
    func deltasThroughTheRouter() async throws {
        try await withStack(nodes: 2) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let sent = try await api.send(thread, "[[silent]] through the router")
            try await eventually("the run is running") { try await stack.logLength(thread) == 3 }
            let stream = try await api.openStream(thread)
            let connection = try await RawConnection.open(port: stack.node.port)

            try await connection.send(try Self.signedDelta(run: UUID().uuidString.lowercased(), index: 0))
            try await eventually("the unknown run's answer") { Self.answers(connection.received).count == 1 }
            #expect(Self.answers(connection.received)[0].head.hasPrefix("HTTP/1.1 404 "), "\(connection.received)")
            // Redis forgets its scripts (as after a restart): the loop's EVALSHA fails, the router's EVAL loads it.
            _ = try await stack.redis.command("SCRIPT", "FLUSH")
            try await connection.send(try Self.signedDelta(run: sent.run, index: 0))
            try await eventually("the delta's answer") { Self.answers(connection.received).count == 2 }
            #expect(Self.answers(connection.received)[1].body == #"{"status":"accepted"}"#)
            try await connection.send(try Self.signedDelta(run: sent.run, index: 1))
            try await eventually("the next delta's answer") { Self.answers(connection.received).count == 3 }
            #expect(Self.answers(connection.received)[2].body == #"{"status":"accepted"}"#)
            #expect(try await api.metric("herald_webhooks_answered_on_loop_total") == 1)
            // A large body is not read on the loop.
            try await connection.send(try Self.signedDelta(run: sent.run, index: 2, text: String(repeating: "long ", count: 14_000)))
            try await eventually("the large delta's answer") { Self.answers(connection.received).count == 4 }
            #expect(Self.answers(connection.received)[3].body == #"{"status":"accepted"}"#)
            #expect(try await api.metric("herald_webhooks_answered_on_loop_total") == 1)

            // The other node has not seen the run: it reads it from PostgreSQL (the router), then knows it.
            let other = try await RawConnection.open(port: stack.nodes[1].port)
            try await other.send(try Self.signedDelta(run: sent.run, index: 3) + Self.signedDelta(run: sent.run, index: 4))
            try await eventually("the other node's answers") { Self.answers(other.received).count == 2 }
            #expect(Self.answers(other.received).map(\.body) == [#"{"status":"accepted"}"#, #"{"status":"accepted"}"#])
            #expect(try await stack.api(node: 1).metric("herald_webhooks_answered_on_loop_total") == 1)

            try await stream.waitForDelta(4)
            try await Task.sleep(for: .milliseconds(200))
            #expect(stream.events.compactMap(\.deltaIndex) == [0, 1, 2, 3, 4])
            await connection.close()
            await other.close()
        }
    }

    @Test("a webhook whose body comes in pieces is answered; one over the body limit gets 413 and its connection closes; `Connection: close` is honoured")
    func webhookBodies() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let sent = try await api.send(thread, "[[silent]] webhook bodies")
            try await eventually("the run is running") { try await stack.logLength(thread) == 3 }

            let pieces = try await RawConnection.open(port: stack.node.port)
            let request = try Self.signedDelta(run: sent.run, index: 0)
            let split = try #require(request.range(of: "\r\n\r\n")).upperBound
            try await pieces.send(String(request[..<split]))
            try await Task.sleep(for: .milliseconds(100))
            let body = request[split...]
            try await pieces.send(String(body.prefix(10)))
            try await Task.sleep(for: .milliseconds(100))
            try await pieces.send(String(body.dropFirst(10)))
            #expect(await pieces.waitForReceived(containing: #"{"status":"accepted"}"#, timeout: .seconds(10)))
            #expect(!pieces.isClosed)
            await pieces.close()

            // Declared too large: refused before the body is read.
            let declared = try await RawConnection.open(port: stack.node.port)
            try await declared.send("POST /webhook/chat-response HTTP/1.1\r\nHost: herald\r\nContent-Length: 2000000\r\n\r\n{")
            #expect(await declared.waitForClose(timeout: .seconds(10)))
            #expect(declared.received.hasPrefix("HTTP/1.1 413 "), "\(declared.received)")
            #expect(declared.received.contains(#""code":"body_too_large""#))

            // Chunked, growing past the limit: refused once it has.
            let chunked = try await RawConnection.open(port: stack.node.port)
            try await chunked.send("POST /webhook/chat-response HTTP/1.1\r\nHost: herald\r\nTransfer-Encoding: chunked\r\n\r\n")
            let chunk = "100000\r\n" + String(repeating: "x", count: 0x100000) + "\r\n"
            try await chunked.send(chunk)
            try? await chunked.send(chunk)
            #expect(await chunked.waitForClose(timeout: .seconds(10)))
            #expect(chunked.received.hasPrefix("HTTP/1.1 413 "), "\(chunked.received)")

            let closing = try await RawConnection.open(port: stack.node.port)
            try await closing.send(try Self.signedDelta(run: sent.run, index: 1, connection: "close"))
            #expect(await closing.waitForClose(timeout: .seconds(10)))
            #expect(closing.received.contains(#"{"status":"accepted"}"#), "\(closing.received)")
        }
    }

    @Test("streams of a thread the node watches open on the loop (header or query token, resumes), the rest through the router; all get the same frames")
    func streamsOpenedOnTheLoop() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let sent = try await api.send(thread, "[[silent]] streams on the loop")
            try await eventually("the run is running") { try await stack.logLength(thread) == 3 }
            let token = try #require(api.token)
            // The first stream subscribes the thread here: the router's way.
            let first = try await api.openStream(thread)
            try await first.waitForComment(containing: "connected")
            #expect(try await api.metric("herald_sse_opened_on_loop_total") == nil)
            let byHeader = try await api.openStream(thread)
            let byQuery = try await API(stack.url, token: nil).openStream(thread, query: "?access_token=\(token)&heartbeat=event")
            let resumed = try await api.openStream(thread, headers: [("Last-Event-ID", try await stack.logIDs(thread)[0])])
            // From another origin: CORS is the router's.
            let crossOrigin = try await api.openStream(thread, headers: [("Origin", "http://elsewhere.example")])
            for stream in [byHeader, byQuery, resumed, crossOrigin] { try await stream.waitForComment(containing: "connected") }
            #expect(try await api.metric("herald_sse_opened_on_loop_total") == 3)
            #expect(try await api.metric("herald_sse_connections_total") == 5)
            // Every open counted and timed as a request of its route, whichever way it went.
            #expect(try await api.metric("herald_http_requests_total", label: #"route="/chats/sse/{thread_id}""#) == 5)
            #expect(try await api.metric("herald_http_request_duration_seconds_count", label: #"route="/chats/sse/{thread_id}""#) == 5)

            for index in 0..<3 { #expect(try await api.delta(run: sent.run, index: index, "token \(index)").status == 200) }
            for stream in [first, byHeader, byQuery, resumed, crossOrigin] { try await stream.waitForDelta(2) }
            try await Task.sleep(for: .milliseconds(200))
            for stream in [first, byHeader, byQuery, crossOrigin] {
                #expect(stream.events.compactMap(\.deltaIndex) == [0, 1, 2])
                #expect(stream.events.filter { $0.type == "run_status" }.isEmpty)
            }
            // The resumed stream first gets what the log holds after its id (the run's queued and running).
            #expect(resumed.events.filter { $0.type == "run_status" }.count == 2)
            #expect(resumed.events.compactMap(\.deltaIndex) == [0, 1, 2])
            #expect(byQuery.events.contains { $0.type == "heartbeat" })
            // One subscription on Redis for the five.
            #expect(try await stack.redis.command("PUBSUB", "NUMSUB", "sse:thread:\(thread)") == "sse:thread:\(thread)\n1")
        }
    }

    @Test("a plain stream request in one piece, in pieces (both opened with no HTTP pipeline) and after another request (through the pipeline): the same head, frames and end")
    func leanAndFullPipelineStreams() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let watching = try await api.openStream(thread)
            try await watching.waitForComment(containing: "connected")
            let request = "GET /chats/sse/\(thread) HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer \(try #require(api.token))\r\n"
                + "Accept: text/event-stream\r\n\r\n"
            let lean = try await RawConnection.open(port: stack.node.port)
            try await lean.send(request)
            let inPieces = try await RawConnection.open(port: stack.node.port)
            let middle = request.index(request.startIndex, offsetBy: 30)
            try await inPieces.send(String(request[..<middle]))
            try await Task.sleep(for: .milliseconds(100))
            try await inPieces.send(String(request[middle...]))
            let afterHealth = try await RawConnection.open(port: stack.node.port)
            try await afterHealth.send("GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
            #expect(await afterHealth.waitForReceived(containing: "HTTP/1.1 200", timeout: .seconds(10)))
            try await afterHealth.send(request)
            let connections = [lean, inPieces, afterHealth]
            for connection in connections {
                #expect(await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)))
            }
            // All opened on the loop (the thread is watched here), two of them without the pipeline.
            #expect(try await api.metric("herald_sse_opened_on_loop_total") == 3)
            #expect(try await api.metric("herald_sse_opened_without_pipeline_total") == 2)

            let sent = try await api.send(thread, "[[silent]] lean or not")
            for index in 0..<3 { #expect(try await api.delta(run: sent.run, index: index, "token \(index)").status == 200) }
            #expect(try await api.request("DELETE", "/chats/\(thread)").status == 204)
            for connection in connections {
                #expect(await connection.waitForClose(timeout: .seconds(10)))
            }
            let (leanHead, leanEvents) = try Self.stream(lean.receivedBytes)
            #expect(leanHead.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(leanHead)")
            #expect(leanHead.lowercased().contains("content-type: text/event-stream\r\n"))
            #expect(leanEvents.compactMap { $0.type == "delta" ? $0.data : nil }.count == 3)
            #expect(leanEvents.last?.type == "thread_deleted")
            for received in [inPieces.receivedBytes, try Self.afterFirstResponse(afterHealth.receivedBytes)] {
                let (head, events) = try Self.stream(received)
                #expect(head == leanHead)
                #expect(events == leanEvents)
            }
        }
    }

    @Test("a stream client that hangs up gets no last chunk, whether its stream has a pipeline or not, and is forgotten")
    func hangUpGetsNoLastChunk() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let watching = try await api.openStream(thread)
            try await watching.waitForComment(containing: "connected")
            let request = "GET /chats/sse/\(thread) HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer \(try #require(api.token))\r\n\r\n"
            let lean = try await RawConnection.open(port: stack.node.port)
            try await lean.send(request)
            let afterHealth = try await RawConnection.open(port: stack.node.port)
            try await afterHealth.send("GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
            #expect(await afterHealth.waitForReceived(containing: "HTTP/1.1 200", timeout: .seconds(10)))
            try await afterHealth.send(request)
            for connection in [lean, afterHealth] {
                #expect(await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)))
            }
            #expect(try await api.metric("herald_sse_opened_without_pipeline_total") == 1)
            #expect(try await api.metric("herald_sse_connections") == 3)

            // FIN, reading on: the server closes, and writes nothing after the preamble it had sent.
            for connection in [lean, afterHealth] {
                let before = connection.receivedBytes.count
                try await connection.shutdownOutput()
                #expect(await connection.waitForClose(timeout: .seconds(10)))
                #expect(connection.receivedBytes.count == before, "\(connection.received)")
                #expect(!connection.received.hasSuffix("0\r\n\r\n"))
            }
            try await eventually(timeout: .seconds(5), "the two streams forgotten") {
                try await api.metric("herald_sse_connections") == 1
            }
        }
    }

    @Test("streams of a thread that is opening for another wait for it, then open on the loop; a stranger's still gets 404")
    func streamsWaitForTheirThreadsFirstOpen() async throws {
        try await withStack(proxiedDatabase: true) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            // Bob's token verified once, as Alice's was by the thread's creation.
            #expect(try await stack.api(user: "bob").request("GET", "/chats").status == 200)
            func streamRequest(_ user: String) throws -> String {
                "GET /chats/sse/\(thread) HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer \(try #require(stack.tokens[user]))\r\n\r\n"
            }
            let proxy = try #require(stack.databaseProxy)

            // PostgreSQL answers nothing: the thread's first stream opens the whole way and stops at its owner check.
            await proxy.hold()
            let first = try await RawConnection.open(port: stack.node.port)
            try await first.send(try streamRequest("alice"))
            try await Task.sleep(for: .milliseconds(500))
            var waiting: [RawConnection] = []
            for _ in 0..<4 {
                let connection = try await RawConnection.open(port: stack.node.port)
                try await connection.send(try streamRequest("alice"))
                waiting.append(connection)
            }
            let stranger = try await RawConnection.open(port: stack.node.port)
            try await stranger.send(try streamRequest("bob"))
            let leaving = try await RawConnection.open(port: stack.node.port)
            try await leaving.send(try streamRequest("alice"))
            try await Task.sleep(for: .milliseconds(300))
            for connection in [first, stranger, leaving] + waiting { #expect(connection.received.isEmpty, "\(connection.received)") }
            // The node must have seen it go before the thread's open ends: one closed later opens, and is then forgotten.
            let openConnections = try #require(try await api.metric("herald_connections_open"))
            await leaving.close()
            try await eventually(timeout: .seconds(10), "the node saw the leaving client go") {
                try await api.metric("herald_connections_open") == openConnections - 1
            }

            await proxy.release()
            for (index, connection) in ([first] + waiting).enumerated() {
                #expect(
                    await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)),
                    "stream \(index): \(connection.received)\n\(stack.logs())"
                )
            }
            #expect(await stranger.waitForReceived(containing: "HTTP/1.1 404", timeout: .seconds(10)), "\(stranger.received)")
            // The four waited and opened on the loop, with no pipeline; only the first went through the router. The
            // one that left while waiting opened nothing.
            #expect(try await api.metric("herald_sse_opened_on_loop_total") == 4)
            #expect(try await api.metric("herald_sse_opened_without_pipeline_total") == 4)
            #expect(try await api.metric("herald_sse_connections") == 5)

            let sent = try await api.send(thread, "[[silent]] waited")
            #expect(try await api.delta(run: sent.run, index: 0, "token").status == 200)
            for connection in [first] + waiting {
                #expect(await connection.waitForReceived(containing: "event: delta", timeout: .seconds(10)))
            }
        }
    }

    @Test("streams of a thread nobody watches yet, asked for at once with a token the node has not verified yet: the first goes the whole way, the others wait for it and open on the loop; with a token that fails, all get 401")
    func coldThreadsStreamsAtOnce() async throws {
        try await withStack(proxiedDatabase: true) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            // A token of Alice's the node has never seen (another expiry): the first request verifies it.
            let unseen = try await Stack.mintToken(user: "alice", ttl: "2h")
            let forged = String(unseen.dropLast(4)) + "AAAA"
            func streamRequest(_ token: String) -> String {
                "GET /chats/sse/\(thread) HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer \(token)\r\n\r\n"
            }
            let proxy = try #require(stack.databaseProxy)

            // A forged token: the one request that claims the thread's opening is refused before any open begins,
            // and the others, which waited for it, are not left waiting.
            var refused: [RawConnection] = []
            for _ in 0..<4 { refused.append(try await RawConnection.open(port: stack.node.port)) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for connection in refused { group.addTask { try await connection.send(streamRequest(forged)) } }
                try await group.waitForAll()
            }
            for connection in refused {
                #expect(await connection.waitForReceived(containing: "HTTP/1.1 401", timeout: .seconds(10)), "\(connection.received)")
            }

            // PostgreSQL answers nothing while the requests arrive: whichever comes first goes the whole way and
            // stops at its owner check, and the others, though their token is not known yet either, wait for it.
            await proxy.hold()
            var streams: [RawConnection] = []
            for _ in 0..<6 { streams.append(try await RawConnection.open(port: stack.node.port)) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for connection in streams { group.addTask { try await connection.send(streamRequest(unseen)) } }
                try await group.waitForAll()
            }
            try await Task.sleep(for: .milliseconds(300))
            for connection in streams { #expect(connection.received.isEmpty, "\(connection.received)") }
            await proxy.release()
            for connection in streams {
                #expect(await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)), "\(connection.received)")
            }
            // Only the first went through the router; without the claim, all six would have (the token unknown).
            #expect(try await api.metric("herald_sse_opened_on_loop_total") == 5)
            #expect(try await api.metric("herald_sse_opened_without_pipeline_total") == 5)
            #expect(try await api.metric("herald_sse_connections") == 6)
        }
    }

    /// What a connection received after its first response (one with a `Content-Length`).
    static func afterFirstResponse(_ received: [UInt8]) throws -> [UInt8] {
        let headEnd = try #require(received.firstRange(of: Array("\r\n\r\n".utf8)))
        let head = String(decoding: received[..<headEnd.lowerBound], as: UTF8.self).lowercased()
        let lengthLine = try #require(head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") })
        let length = try #require(Int(lengthLine.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)))
        return Array(received[(headEnd.upperBound + length)...])
    }

    /// A chunked event stream as received: its head, and its events read by the test's own SSE parser from the
    /// de-chunked body, which must end with the last chunk.
    static func stream(_ received: [UInt8]) throws -> (head: String, events: [SSEEvent]) {
        let text = Substring(decoding: received, as: UTF8.self)
        let headEnd = try #require(text.range(of: "\r\n\r\n"))
        var rest = Array(text[headEnd.upperBound...].utf8)[...]
        var body: [UInt8] = []
        while true {
            let lineEnd = try #require(rest.firstRange(of: Array("\r\n".utf8)))
            let size = try #require(Int(String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self), radix: 16))
            rest = rest[lineEnd.upperBound...]
            if size == 0 {
                #expect(Array(rest) == Array("\r\n".utf8))
                break
            }
            body += rest.prefix(size)
            #expect(Array(rest.dropFirst(size).prefix(2)) == Array("\r\n".utf8))
            rest = rest.dropFirst(size + 2)
        }
        var parser = SSEParser()
        let events = parser.feed(body).compactMap { item -> SSEEvent? in
            if case .event(let event) = item { return event }
            return nil
        }
        return (String(text[..<headEnd.lowerBound]), events)
    }

    /// A signed native delta as an engine writes it on the wire.
    static func signedDelta(
        run: String, index: Int, text: String? = nil, query: String = "", connection: String = "keep-alive"
    ) throws -> String {
        let body = #"{"run_id":"\#(run)","event":"delta","index":\#(index),"delta":"\#(text ?? "token \(index) ")"}"#
        let id = "msg_\(UUID().uuidString)", timestamp = Int(Date().timeIntervalSince1970)
        let signature = try StandardWebhooks(secrets: [Stack.webhookSecret]).sign(id: id, timestamp: timestamp, body: Array(body.utf8))
        return "POST /webhook/chat-response\(query) HTTP/1.1\r\nHost: herald\r\nConnection: \(connection)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\nwebhook-id: \(id)\r\nwebhook-timestamp: \(timestamp)\r\n"
            + "webhook-signature: \(signature)\r\n\r\n\(body)"
    }

    /// The complete responses (head, body by `Content-Length`) in what a connection received, in order.
    static func answers(_ received: String) -> [(head: String, body: String)] {
        var answers: [(head: String, body: String)] = []
        var rest = Substring(received)
        while let end = rest.range(of: "\r\n\r\n") {
            let head = String(rest[..<end.lowerBound])
            guard let line = head.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }),
                  let length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) else { break }
            let bodyStart = end.upperBound
            guard rest.utf8.distance(from: bodyStart, to: rest.endIndex) >= length else { break }
            let bodyEnd = rest.utf8.index(bodyStart, offsetBy: length)
            answers.append((head, String(rest[bodyStart..<bodyEnd])))
            rest = rest[bodyEnd...]
        }
        return answers
    }
}
