import Foundation
import HeraldTestSupport
import Testing

/// The OpenAPI document the node serves, checked by independent validators (Tests/OpenAPI/check.py) together with
/// real traffic: every response below, with its status and body, and every stream frame must be what the document
/// says. (That every route is described, and nothing else, is HeraldHTTPTests' `OpenAPIRouteTests`.)
@Suite("OpenAPI contract: real responses and frames match /openapi.json", .serialized, .timeLimit(.minutes(4)))
struct OpenAPIContractTests {
    @Test("REST responses, errors, webhook bodies and every kind of stream event validate against the served document")
    func realTrafficMatchesDocument() async throws {
        let environment = [
            "HERALD_SENDS_PER_MINUTE": "4", "HERALD_MAX_STREAMS_PER_USER": "4", "HERALD_MAX_BODY_BYTES": "8192",
            "HERALD_HEARTBEAT_SECONDS": "1",
        ]
        try await withStack(environment: environment) { stack in
            let api = stack.api()
            let contract = ContractRecorder()
            func call(
                _ method: String, _ path: String, pattern: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                as requestAPI: API? = nil
            ) async throws -> TestHTTPResponse {
                let response = try await (requestAPI ?? api).request(method, path, headers: headers, body: body)
                contract.response(method, pattern, response)
                // Bodies Herald accepted are requests the document must describe too (refused ones are meant to be wrong).
                if let body, response.status < 300, headers.contains(where: { $0.1 == "application/json" }) {
                    contract.request(method, pattern, body: body)
                }
                return response
            }
            let json = [("Content-Type", "application/json")]

            let document = try await call("GET", "/openapi.json", pattern: "/openapi.json")
            #expect(document.status == 200)
            #expect(document.header("Content-Type")?.hasPrefix("application/json") == true)

            // Threads.
            let createBody = Array(#"{"title":"contract","metadata":{"k":[1,2]}}"#.utf8)
            let created = try await call("POST", "/chats", pattern: "/chats", headers: json, body: createBody)
            #expect(created.status == 201)
            let thread = try #require(try api.json(created)["id"] as? String)
            _ = try await call("POST", "/chats", pattern: "/chats", headers: json, body: Array("{}".utf8))
            #expect(try await call("GET", "/chats?limit=1", pattern: "/chats").status == 200)
            #expect(try await call("GET", "/chats/\(thread)", pattern: "/chats/{thread_id}").status == 200)

            // A stream with heartbeat events, and one resuming from an unusable id (resync).
            let stream = try await api.openStream(thread, query: "?heartbeat=event")
            try await stream.waitForComment(containing: "connected")
            let resyncing = try await api.openStream(thread, headers: [("Last-Event-ID", "not-an-id")])
            _ = try await resyncing.waitForEvents(count: 1)

            // A completed run and a failed one: message_update, run_status, delta, error.
            let sendBody = Array(#"{"content":"contract check","metadata":{"source":"test"}}"#.utf8)
            #expect(try await call("POST", "/chats/\(thread)/send", pattern: "/chats/{thread_id}/send", headers: json, body: sendBody).status == 202)
            let failBody = Array(#"{"content":"please [[fail]]"}"#.utf8)
            #expect(try await call("POST", "/chats/\(thread)/send", pattern: "/chats/{thread_id}/send", headers: json, body: failBody).status == 202)
            try await eventually("both runs end on the stream") {
                stream.events.filter { $0.type == "run_status" && ["completed", "failed"].contains($0.object["status"] as? String) }.count == 2
            }
            #expect(try await call("GET", "/chats/\(thread)/messages?limit=10", pattern: "/chats/{thread_id}/messages").status == 200)

            // The WebSocket: the handshake's refusals, then every kind of message each way.
            let anonymous = API(stack.url, token: nil)
            let upgrade = [
                ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ]
            #expect(try await call("GET", "/ws", pattern: "/ws").status == 426)
            #expect(try await call("GET", "/ws", pattern: "/ws", headers: upgrade, as: anonymous).status == 401)
            #expect(try await call("GET", "/ws", pattern: "/ws", headers: upgrade.dropLast() + [("Sec-WebSocket-Version", "8")]).status == 426)
            #expect(try await call("GET", "/ws", pattern: "/ws", headers: Array(upgrade.dropFirst(2)) + [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "x")]).status == 400)
            let cookieFromElsewhere = [("Cookie", "access_token=\(try #require(stack.tokens["alice"]))"), ("Origin", "https://evil.example")]
            #expect(try await call("GET", "/ws", pattern: "/ws", headers: upgrade + cookieFromElsewhere, as: anonymous).status == 403)
            let socket = try await TestWebSocket.connect(stack.url, token: stack.tokens["alice"])
            let clientMessages: [[String: Any]] = [
                ["type": "subscribe", "thread_id": thread, "last_event_id": "0"],
                ["type": "ping"],
                ["type": "send", "thread_id": thread, "content": "over the socket", "client_id": "c-1", "metadata": ["k": 1]],
                ["type": "subscribe", "thread_id": thread],
                ["type": "unsubscribe", "thread_id": thread],
            ]
            for message in clientMessages {
                try socket.send(message)
                contract.webSocketMessage(message, from: "client")
                // The log's frames and the run's own, before the next message.
                if message["last_event_id"] != nil { try await socket.waitForMessages(count: 4) { $0["type"] as? String == "event" } }
                if message["type"] as? String == "send" { try await socket.waitForMessages(count: 1) { $0["type"] as? String == "ack" } }
            }
            try await socket.waitForMessages(count: 1) { $0["type"] as? String == "unsubscribed" }
            let received = Set(socket.messages.compactMap { $0["type"] as? String })
            #expect(received.isSuperset(of: ["subscribed", "event", "pong", "ack", "error", "unsubscribed"]), "\(received)")
            for message in socket.messages { contract.webSocketMessage(message, from: "server") }
            await socket.close()

            // Errors the document promises.
            #expect(try await call("GET", "/chats", pattern: "/chats", as: anonymous).status == 401)
            #expect(try await call("GET", "/chats/not-a-uuid", pattern: "/chats/{thread_id}").status == 400)
            #expect(try await call("GET", "/chats/\(UUID().uuidString.lowercased())", pattern: "/chats/{thread_id}").status == 404)
            #expect(try await call("GET", "/chats?limit=0", pattern: "/chats").status == 422)
            #expect(try await call("POST", "/chats", pattern: "/chats", headers: [("Content-Type", "text/plain")], body: Array("x".utf8)).status == 415)
            #expect(try await call("POST", "/chats", pattern: "/chats", headers: json, body: Array("{".utf8)).status == 400)
            #expect(try await call("POST", "/chats", pattern: "/chats", headers: json, body: Array(#"{"owner":"x"}"#.utf8)).status == 422)
            let oversized = Array(#"{"title":"\#(String(repeating: "x", count: 9000))"}"#.utf8)
            #expect(try await call("POST", "/chats", pattern: "/chats", headers: json, body: oversized).status == 413)
            var sendStatuses: [Int] = []
            for _ in 0..<4 {
                let response = try await call("POST", "/chats/\(thread)/send", pattern: "/chats/{thread_id}/send", headers: json, body: sendBody)
                sendStatuses.append(response.status)
            }
            #expect(sendStatuses.contains(429), "\(sendStatuses)")
            var extraStreams: [TestHTTPResponse] = []
            for _ in 0..<3 {
                extraStreams.append(try await call("GET", "/chats/sse/\(thread)?heartbeat=bogus", pattern: "/chats/sse/{thread_id}"))
            }
            #expect(extraStreams.allSatisfy { $0.status == 422 })
            let third = try await api.openStream(thread), fourth = try await api.openStream(thread)
            #expect(try await call("GET", "/chats/sse/\(thread)", pattern: "/chats/sse/{thread_id}").status == 429)
            await third.connection.closeGracefully()
            await fourth.connection.closeGracefully()

            // Webhooks: a signed result for an unknown run, an unsigned one, and a delta for a run that has ended.
            let unknownRun = UUID().uuidString.lowercased()
            let native = #"{"event":"completed","content":"x"}"#
            let notFound = try await api.postWebhook(json: native, query: "?run_id=\(unknownRun)")
            contract.response("POST", "/webhook/chat-response", notFound)
            #expect(notFound.status == 404)
            let unsigned = try await call(
                "POST", "/webhook/chat-response?run_id=\(unknownRun)", pattern: "/webhook/chat-response", headers: json,
                body: Array(native.utf8), as: anonymous
            )
            #expect(unsigned.status == 401)
            let endedRun = try #require(stream.events.first { $0.type == "run_status" }?.object["run_id"] as? String)
            let lateDelta = #"{"event":"delta","delta":"late","index":99}"#
            let ignored = try await api.postWebhook(json: lateDelta, query: "?run_id=\(endedRun)")
            contract.response("POST", "/webhook/chat-response", ignored)
            contract.request("POST", "/webhook/chat-response", body: Array(lateDelta.utf8))
            #expect(ignored.status == 200)
            // The bodies the decoder's fuzzing starts from are bodies Herald accepts (LangGraph and native).
            let corpus = "\(packageRoot())/Fuzz/corpus"
            for name in try FileManager.default.contentsOfDirectory(atPath: corpus).sorted() where name.hasSuffix(".json") {
                contract.request("POST", "/webhook/chat-response", body: Array(try Data(contentsOf: URL(fileURLWithPath: "\(corpus)/\(name)"))))
            }

            // Operations and the page.
            for path in ["/healthz", "/readyz", "/metrics", "/", "/ui/app.js", "/ui/thread-stream.js", "/ui/style.css"] {
                #expect(try await call("GET", path, pattern: path).status == 200, "\(path)")
            }
            // Without the development mode, /dev/token does not exist.
            #expect(try await call("POST", "/dev/token", pattern: "/dev/token", headers: json, body: Array(#"{"user":"x"}"#.utf8)).status == 404)

            // Deleting ends the stream with thread_deleted; the deleted thread is gone.
            #expect(try await call("DELETE", "/chats/\(thread)", pattern: "/chats/{thread_id}").status == 204)
            try await stream.waitForEnd()
            #expect(try await call("DELETE", "/chats/\(thread)", pattern: "/chats/{thread_id}").status == 404)

            let kinds = Set(stream.events.map(\.type) + resyncing.events.map(\.type))
            #expect(kinds == ["heartbeat", "message_update", "run_status", "delta", "error", "thread_deleted", "resync"], "\(kinds)")
            contract.frames(of: stream)
            contract.frames(of: resyncing)
            await resyncing.connection.closeGracefully()
            try await contract.check(document: document.body)
        }
    }
}
