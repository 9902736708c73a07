import Foundation
import HeraldTestSupport
import Testing

/// `GET /ws`: many threads on one socket, from the same hub as SSE, with the same guarantees. The client is
/// swift-websocket's (another implementation than the server's), or raw bytes where a client library would not
/// misbehave.
@Suite("WebSocket transport", .serialized, .timeLimit(.minutes(3)))
struct WebSocketTests {
    /// user message_update, run_status queued and running, three deltas, the reply, run_status completed.
    static let fullRun = ["message_update", "run_status", "run_status", "delta", "delta", "delta", "message_update", "run_status"]

    @Test("three threads on one socket, sends on two: every frame of each exactly once, in order, as the log holds it")
    func threadsOnOneSocket() async throws {
        try await withStack { stack in
            let api = stack.api()
            let threads = [try await api.createThread(), try await api.createThread(), try await api.createThread()]
            let socket = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"])
            for thread in threads {
                try socket.send(["type": "subscribe", "thread_id": thread])
            }
            for thread in threads {
                let subscribed = try await socket.waitForReply("subscribed", thread: thread)
                #expect(subscribed["resync"] == nil)
            }
            try socket.send(["type": "send", "thread_id": threads[0], "content": "first thread", "client_id": "c-1"])
            try socket.send(["type": "send", "thread_id": threads[1], "content": "second thread", "client_id": "c-2"])

            let acks = try await socket.waitForMessages(count: 2) { $0["type"] as? String == "ack" }
            #expect(Set(acks.compactMap { $0["client_id"] as? String }) == ["c-1", "c-2"])
            for ack in acks {
                let message = try #require(ack["message"] as? [String: Any])
                #expect(message["role"] as? String == "user")
                #expect((ack["run"] as? [String: Any])?["status"] as? String == "queued")
            }

            for (thread, content) in [(threads[0], "first thread"), (threads[1], "second thread")] {
                let events = try await socket.waitForEvents(of: thread, count: Self.fullRun.count)
                #expect(events.map { $0["event"] as? String } == Self.fullRun)
                let data = events.map { $0["data"] as? [String: Any] ?? [:] }
                #expect(data.allSatisfy { $0["thread_id"] as? String == thread })
                #expect((data[6]["message"] as? [String: Any])?["content"] as? String == "echo: \(content)")
                // Exactly the frames of the thread's log, once each, in its order.
                let ids = events.compactMap { $0["id"] as? String }
                #expect(ids == (try await stack.logIDs(thread)))
            }
            // Nothing leaked into the thread nobody sent to, nor into the others afterwards.
            try await Task.sleep(for: .milliseconds(300))
            #expect(socket.events(of: threads[2]).isEmpty)
            #expect(socket.events(of: threads[0]).count == Self.fullRun.count)
            #expect(socket.events(of: threads[1]).count == Self.fullRun.count)
            await socket.close()
        }
    }

    @Test("a thread resumes after a reconnect from its last event id: the missed frames once, nothing twice")
    func resumeAfterReconnect() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let first = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"])
            try first.send(["type": "subscribe", "thread_id": thread])
            try await first.waitForReply("subscribed", thread: thread)
            let sent = try await api.send(thread, "[[silent]] resume me")
            try await first.waitForEvents(of: thread, count: 3)
            for index in 0..<5 { #expect(try await api.delta(run: sent.run, index: index, "a\(index) ").status == 200) }
            let seen = try await first.waitForEvents(of: thread, count: 8)
            let lastSeen = try #require(seen.last?["id"] as? String)
            await first.close()

            // Published while no socket watched the thread.
            for index in 5..<10 { #expect(try await api.delta(run: sent.run, index: index, "b\(index) ").status == 200) }

            let second = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"], tokenInQuery: true)
            try second.send(["type": "subscribe", "thread_id": thread, "last_event_id": lastSeen])
            try await second.waitForReply("subscribed", thread: thread)
            for index in 10..<12 { #expect(try await api.delta(run: sent.run, index: index, "c\(index) ").status == 200) }
            let resumed = try await second.waitForEvents(of: thread, count: 7)
            #expect(resumed.map { ($0["data"] as? [String: Any])?["index"] as? Int } == Array(5..<12))
            let all = seen.compactMap { $0["id"] as? String } + resumed.compactMap { $0["id"] as? String }
            #expect(all == (try await stack.logIDs(thread)))

            // A malformed id is answered with resync, then the thread goes live.
            let third = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"])
            try third.send(["type": "subscribe", "thread_id": thread, "last_event_id": "not-an-id"])
            let subscribed = try await third.waitForReply("subscribed", thread: thread)
            #expect(subscribed["resync"] as? Bool == true)
            let resync = try await third.waitForEvents(of: thread, count: 1)
            #expect(resync[0]["event"] as? String == "resync")
            await second.close()
            await third.close()
        }
    }

    @Test("SSE and WebSocket clients on two nodes see identical frames; one Redis subscription per thread per node")
    func mixedAudience() async throws {
        try await withStack(nodes: 2) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let sse = try await api.openStream(thread)
            try await sse.waitForComment(containing: "connected")
            let sameNode = try await TestWebSocket.connect(stack.nodes[0].url, token: stack.tokens["alice"])
            let otherNode = try await TestWebSocket.connect(stack.nodes[1].url, token: stack.tokens["alice"])
            for socket in [sameNode, otherNode] {
                try socket.send(["type": "subscribe", "thread_id": thread])
                try await socket.waitForReply("subscribed", thread: thread)
            }
            let numsub = try await stack.redis.command("PUBSUB", "NUMSUB", "sse:thread:\(thread)")
            #expect(numsub.split(separator: "\n").last == "2", "one subscriber connection per node: \(numsub)")

            _ = try await stack.api(node: 1).send(thread, "mixed audience")
            let sseEvents = try await sse.waitForEvents(count: Self.fullRun.count)
            let expected = sseEvents.map { event in
                [event.lastEventID, event.type, Self.canonical(try? JSONSerialization.jsonObject(with: Data(event.data.utf8)))]
            }
            for socket in [sameNode, otherNode] {
                let events = try await socket.waitForEvents(of: thread, count: Self.fullRun.count)
                let got = events.map { [$0["id"] as? String ?? "", $0["event"] as? String ?? "", Self.canonical($0["data"])] }
                #expect(got == expected)
            }
            await sameNode.close()
            await otherNode.close()
            await sse.connection.closeGracefully()
        }
    }

    @Test("the subscriber connection killed while frames flow: each thread of a socket gets every frame once, in order")
    func subscriberConnectionKilled() async throws {
        try await withStack { stack in
            let api = stack.api()
            let threads = [try await api.createThread(), try await api.createThread()]
            let socket = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"])
            for thread in threads {
                try socket.send(["type": "subscribe", "thread_id": thread])
                try await socket.waitForReply("subscribed", thread: thread)
            }
            var runs: [String] = []
            for thread in threads {
                runs.append(try await api.send(thread, "[[silent]] outage").run)
                try await socket.waitForEvents(of: thread, count: 3)
            }
            let total = 100
            let publishers = runs.map { DeltaPublisher.steady(api: api, run: $0, indexes: 0..<total, interval: .milliseconds(10)) }
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await stack.redis.command("CLIENT", "KILL", "TYPE", "pubsub") == "1")
            try await Task.sleep(for: .milliseconds(400))
            #expect(try await stack.redis.command("CLIENT", "KILL", "TYPE", "pubsub") == "1", "the subscriber did not reconnect")
            for publisher in publishers { try await publisher.finish() }

            for thread in threads {
                let events = try await socket.waitForEvents(of: thread, count: 3 + total)
                #expect(mismatch(events.compactMap { $0["id"] as? String }, try await stack.logIDs(thread)) == nil, "thread \(thread)")
                let indexes = events.compactMap { ($0["data"] as? [String: Any])?["index"] as? Int }
                #expect(mismatch(indexes, Array(0..<total)) == nil, "thread \(thread)")
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(threads.allSatisfy { socket.events(of: $0).count == 3 + total })
            await socket.close()
        }
    }

    @Test("a socket that reads nothing is cut as a slow consumer (1013); a fast socket on the same thread gets everything")
    func slowSocket() async throws {
        try await withStack(environment: ["HERALD_STREAM_QUEUE_FRAMES": "64", "HERALD_STREAM_QUEUE_BYTES": "1048576"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let fast = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"])
            try fast.send(["type": "subscribe", "thread_id": thread])
            try await fast.waitForReply("subscribed", thread: thread)
            let slow = try await RawWebSocket.open(port: stack.node.port, token: try #require(stack.tokens["alice"]), receiveBufferSize: 4096)
            try await slow.send(text: #"{"type":"subscribe","thread_id":"\#(thread)"}"#)
            _ = try await slow.waitForFrame { $0.text.contains("subscribed") }
            try await slow.connection.stopReading()
            let sent = try await api.send(thread, "[[silent]] slow and fast")
            try await fast.waitForEvents(of: thread, count: 3)

            let total = try await DeltaPublisher.floodUntilCut(api: api, run: sent.run, counter: "herald_websocket_closes_total")
            // Closed: reading again, the client finds the end (the close frame itself may not get past the backlog).
            try await slow.connection.resumeReading()
            #expect(await slow.connection.waitForClose(timeout: .seconds(10)))

            let events = try await fast.waitForEvents(of: thread, count: 3 + total, timeout: .seconds(15))
            let indexes = events.compactMap { ($0["data"] as? [String: Any])?["index"] as? Int }
            #expect(mismatch(indexes.sorted(), Array(0..<total)) == nil, "the fast socket missed or repeated deltas")
            #expect(try await api.metric("herald_sse_connections") == 1)
            #expect(try await api.delta(run: sent.run, index: total, "more").status == 200)
            try await fast.waitForEvents(of: thread, count: 4 + total)
            await fast.close()
        }
    }

    @Test("a client that answers no ping is closed after two intervals and cleaned up; one that answers stays")
    func pingTimeout() async throws {
        // Pings every second: a client that answers has two to do it, even on a loaded machine.
        try await withStack(environment: ["HERALD_HEARTBEAT_SECONDS": "1"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let token = try #require(stack.tokens["alice"])
            let answering = try await TestWebSocket.connect(stack.url, token: token)
            try answering.send(["type": "subscribe", "thread_id": thread])
            try await answering.waitForReply("subscribed", thread: thread)
            let silent = try await RawWebSocket.open(port: stack.node.port, token: token)
            try await silent.send(text: #"{"type":"subscribe","thread_id":"\#(thread)"}"#)
            _ = try await silent.waitForFrame { $0.text.contains("subscribed") }
            #expect(try await api.metric("herald_sse_connections") == 2)

            _ = try await silent.waitForFrame { $0.opcode == 0x9 }
            let close = try await silent.waitForFrame(timeout: .seconds(10)) { $0.opcode == 0x8 }
            #expect(close.closeCode == 1008)
            #expect(close.text.hasSuffix("ping_timeout"))
            #expect(await silent.connection.waitForClose(timeout: .seconds(3)))
            try await eventually(timeout: .seconds(5), "the silent socket's stream is gone") {
                try await api.metric("herald_sse_connections") == 1
            }

            // The client that answers pings is still served, long after.
            try await Task.sleep(for: .seconds(1))
            _ = try await api.send(thread, "still here")
            try await answering.waitForEvents(of: thread, count: Self.fullRun.count)
            await answering.close()
            try await eventually(timeout: .seconds(5), "NUMSUB back to 0") {
                try await stack.redis.command("PUBSUB", "NUMSUB", "sse:thread:\(thread)").split(separator: "\n").last == "0"
            }
            #expect(try await api.metric("herald_sse_connections") == 0)
        }
    }

    @Test("a send with use_cache over the socket: a repeated question is acked as cached and its reply's frames say so")
    func cachedSend() async throws {
        try await withStack(environment: ["HERALD_CACHE_TTL_SECONDS": "60"]) { stack in
            let api = stack.api()
            let first = try await api.createThread(), second = try await api.createThread()
            let socket = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"])
            for thread in [first, second] {
                try socket.send(["type": "subscribe", "thread_id": thread])
                try await socket.waitForReply("subscribed", thread: thread)
            }
            try socket.send(["type": "send", "thread_id": first, "content": "cache me", "use_cache": true, "client_id": "miss"])
            try await socket.waitForEvents(of: first, count: Self.fullRun.count)
            try await eventually("the reply is cached") {
                try await PrometheusScrape.scrape(stack.url).total("herald_response_cache_total", ["outcome": "stored"]) == 1
            }
            try socket.send(["type": "send", "thread_id": second, "content": "Cache  me", "use_cache": true, "client_id": "hit"])
            let ack = try await socket.waitForMessages(count: 1) { $0["type"] as? String == "ack" && $0["client_id"] as? String == "hit" }[0]
            #expect(ack["cached"] as? Bool == true)
            let missAck = socket.messages.first { $0["type"] as? String == "ack" && $0["client_id"] as? String == "miss" }
            #expect(missAck?["cached"] == nil)
            try await eventually("the cached reply's final status arrives") {
                socket.events(of: second).contains { ($0["data"] as? [String: Any])?["status"] as? String == "completed" }
            }
            let reply = socket.events(of: second).filter { $0["event"] as? String == "delta" }
            #expect(reply.map { ($0["data"] as? [String: Any])?["delta"] as? String ?? "" }.joined() == "echo: cache me")
            #expect(reply.allSatisfy { ($0["data"] as? [String: Any])?["cached"] as? Bool == true })
            #expect(try await stack.engineRuns() == 1)
            await socket.close()
        }
    }

    @Test("a deleted thread is unsubscribed after its thread_deleted frame; the socket goes on with the others")
    func threadDeleted() async throws {
        try await withStack { stack in
            let api = stack.api()
            let doomed = try await api.createThread()
            let kept = try await api.createThread()
            let socket = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"])
            for thread in [doomed, kept] {
                try socket.send(["type": "subscribe", "thread_id": thread])
                try await socket.waitForReply("subscribed", thread: thread)
            }
            #expect(try await api.request("DELETE", "/chats/\(doomed)").status == 204)
            let events = try await socket.waitForEvents(of: doomed, count: 1)
            #expect(events[0]["event"] as? String == "thread_deleted")
            let unsubscribed = try await socket.waitForReply("unsubscribed", thread: doomed)
            #expect(unsubscribed["reason"] as? String == "thread_deleted")
            try await eventually(timeout: .seconds(5), "NUMSUB 0 for the deleted thread") {
                try await stack.redis.command("PUBSUB", "NUMSUB", "sse:thread:\(doomed)").split(separator: "\n").last == "0"
            }
            _ = try await api.send(kept, "after deletion")
            try await socket.waitForEvents(of: kept, count: Self.fullRun.count)

            // Asked for: unsubscribed, and nothing more of the thread arrives.
            try socket.send(["type": "unsubscribe", "thread_id": kept])
            #expect(try await socket.waitForReply("unsubscribed", thread: kept)["reason"] as? String == "client")
            _ = try await api.send(kept, "nobody listens")
            try await Task.sleep(for: .milliseconds(500))
            #expect(socket.events(of: kept).count == Self.fullRun.count)
            await socket.close()
        }
    }

    @Test("bad messages get an error each and the socket lives on; nothing of another user's is reached or stored")
    func badMessages() async throws {
        try await withStack(environment: ["HERALD_WS_MAX_THREADS": "2"]) { stack in
            let api = stack.api()
            let mine = try await api.createThread()
            let other = try await api.createThread()
            let bobs = try await stack.api(user: "bob").createThread()
            let socket = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"])
            let cases: [(String, String)] = [
                ("{not json", "malformed_request"),
                ("[1,2]", "invalid_request"),
                (#"{"type":"dance"}"#, "unknown_type"),
                (#"{"type":42}"#, "invalid_request"),
                (#"{"type":"subscribe"}"#, "invalid_id"),
                (#"{"type":"subscribe","thread_id":"nope"}"#, "invalid_id"),
                (#"{"type":"subscribe","thread_id":"\#(mine)","colour":"red"}"#, "invalid_request"),
                (#"{"type":"subscribe","thread_id":"\#(bobs)"}"#, "not_found"),
                (#"{"type":"unsubscribe","thread_id":"\#(mine)"}"#, "not_subscribed"),
                (#"{"type":"send","thread_id":"\#(bobs)","content":"hi bob","client_id":"x-1"}"#, "not_found"),
                (#"{"type":"send","thread_id":"\#(mine)","content":"  ","client_id":"x-2"}"#, "invalid_request"),
                (#"{"type":"send","thread_id":"\#(mine)","content":7}"#, "invalid_request"),
            ]
            for (index, (text, code)) in cases.enumerated() {
                socket.send(text: text)
                let errors = try await socket.waitForMessages(count: index + 1) { $0["type"] as? String == "error" }
                #expect(errors[index]["code"] as? String == code, "\(text) → \(errors[index])")
            }
            let errors = socket.messages.filter { $0["type"] as? String == "error" }
            #expect(errors[7]["thread_id"] as? String == bobs)
            #expect(errors[9]["client_id"] as? String == "x-1")
            #expect(errors[10]["client_id"] as? String == "x-2")

            // Subscriptions: the same thread twice, and past the per-socket limit.
            try socket.send(["type": "subscribe", "thread_id": mine])
            try await socket.waitForReply("subscribed", thread: mine)
            try socket.send(["type": "subscribe", "thread_id": mine])
            try await socket.waitForError("already_subscribed", thread: mine)
            try socket.send(["type": "subscribe", "thread_id": other])
            try await socket.waitForReply("subscribed", thread: other)
            let third = try await api.createThread()
            try socket.send(["type": "subscribe", "thread_id": third])
            try await socket.waitForError("too_many_subscriptions", thread: third)

            // Still served after all that.
            try socket.send(["type": "ping"])
            try await socket.waitForMessages(count: 1) { $0["type"] as? String == "pong" }
            // Nothing reached Bob's thread.
            #expect(try await stack.api(user: "bob").messages(bobs).isEmpty)
            #expect(try await stack.redis.command("PUBSUB", "NUMSUB", "sse:thread:\(bobs)").split(separator: "\n").last == "0")
            await socket.close()
        }
    }

    @Test("protocol violations close the socket with their code: binary 1003, unmasked 1002, oversized 1009")
    func protocolViolations() async throws {
        try await withStack(environment: ["HERALD_MAX_BODY_BYTES": "2048"]) { stack in
            let token = try #require(stack.tokens["alice"])
            let port = stack.node.port
            let violations: [(String, (RawWebSocket) async throws -> Void, Int)] = [
                ("binary", { try await $0.send(opcode: 0x2, [1, 2, 3]) }, 1003),
                ("unmasked", { try await $0.send(opcode: 0x1, Array(#"{"type":"ping"}"#.utf8), masked: false) }, 1002),
                ("oversized", { try await $0.send(text: String(repeating: " ", count: 4096) + #"{"type":"ping"}"#) }, 1009),
                ("oversized in fragments", { socket in
                    try await socket.send(opcode: 0x1, Array(repeating: 0x20, count: 1500), fin: false)
                    try await socket.send(opcode: 0x0, Array(repeating: 0x20, count: 1500))
                }, 1009),
            ]
            for (name, violate, code) in violations {
                let socket = try await RawWebSocket.open(port: port, token: token)
                try await violate(socket)
                let close = try await socket.waitForFrame { $0.opcode == 0x8 }
                #expect(close.closeCode == code, "\(name): \(close.closeCode ?? -1)")
                #expect(await socket.connection.waitForClose(timeout: .seconds(5)), "\(name): still open")
            }
            // A client's ping frame is answered with a pong carrying its data; a close is answered with a close.
            let socket = try await RawWebSocket.open(port: port, token: token)
            try await socket.send(opcode: 0x9, Array("are you there".utf8))
            #expect(try await socket.waitForFrame { $0.opcode == 0xA }.text == "are you there")
            try await socket.send(opcode: 0x8, [0x03, 0xE8])
            #expect(try await socket.waitForFrame { $0.opcode == 0x8 }.closeCode == 1000)
            #expect(await socket.connection.waitForClose(timeout: .seconds(5)))
        }
    }

    @Test("the handshake: no token 401, not an upgrade 426, wrong version 426, foreign origin with a cookie 403, a socket holds one stream slot")
    func handshake() async throws {
        try await withStack(environment: ["HERALD_MAX_STREAMS_PER_USER": "2", "HERALD_CORS_ORIGINS": "https://app.example.com"]) { stack in
            let api = stack.api()
            let upgrade = [
                ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ]
            let token = try #require(stack.tokens["alice"])
            let anonymous = try await TestHTTPClient.request("GET", "\(stack.url)/ws", headers: upgrade)
            #expect(anonymous.status == 401)
            #expect(anonymous.text.contains(#""code":"unauthorized""#))
            let plain = try await api.request("GET", "/ws")
            #expect(plain.status == 426)
            #expect(plain.header("Upgrade") == "websocket")
            let version = try await api.request("GET", "/ws", headers: upgrade.map { $0.0 == "Sec-WebSocket-Version" ? ($0.0, "8") : $0 })
            #expect(version.status == 426)
            #expect(version.header("Sec-WebSocket-Version") == "13")
            let badKey = try await api.request("GET", "/ws", headers: upgrade.map { $0.0 == "Sec-WebSocket-Key" ? ($0.0, "short") : $0 })
            #expect(badKey.status == 400)
            let foreign = try await TestHTTPClient.request(
                "GET", "\(stack.url)/ws", headers: upgrade + [("Cookie", "access_token=\(token)"), ("Origin", "https://evil.example")]
            )
            #expect(foreign.status == 403)
            #expect(foreign.text.contains("origin_not_allowed"))

            // The accept key of RFC 6455's own example, from a cookie-authenticated socket of an allowed origin.
            let raw = try await RawConnection.open(port: stack.node.port)
            try await raw.send(
                "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    + "Sec-WebSocket-Version: 13\r\nCookie: access_token=\(token)\r\nOrigin: https://app.example.com\r\n\r\n"
            )
            #expect(await raw.waitForReceived(containing: "\r\n\r\n", timeout: .seconds(5)))
            #expect(raw.received.hasPrefix("HTTP/1.1 101"))
            #expect(raw.received.lowercased().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"))

            // That socket holds one of Alice's two slots however many threads it watches; a second socket takes
            // the other; a third stream is refused.
            let socket = try await TestWebSocket.connect(stack.url, token: token)
            for _ in 0..<3 {
                let thread = try await api.createThread()
                try socket.send(["type": "subscribe", "thread_id": thread])
                try await socket.waitForReply("subscribed", thread: thread)
            }
            let refused = try await TestHTTPClient.request("GET", "\(stack.url)/chats/sse/\(try await api.createThread())", headers: api.authorization)
            #expect(refused.status == 429)
            await raw.close()
            try await eventually(timeout: .seconds(5), "the closed socket's slot is free again") {
                let thread = try await api.createThread()
                let stream = try await TestStreamingConnection.open("\(stack.url)/chats/sse/\(thread)", headers: api.authorization)
                defer { Task { await stream.closeGracefully() } }
                return stream.status == 200
            }
            await socket.close()
        }
    }

    /// JSON as comparable text: keys sorted, so the same object serialized twice compares equal.
    private static func canonical(_ value: Any?) -> String {
        guard let value, let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }
}
