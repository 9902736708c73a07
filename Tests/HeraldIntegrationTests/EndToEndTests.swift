import Foundation
import HeraldTestSupport
import Testing

@Suite("send → agent → webhook → Redis → SSE", .serialized, .timeLimit(.minutes(3)))
struct EndToEndTests {
    @Test("a send shows up on the stream: user message, statuses, deltas, assistant message")
    func fullLoop() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected", timeout: .seconds(5))

            let sent = try await api.send(thread, "hello there")
            // user message_update, run_status queued, run_status running, 3 deltas ("echo: ", "hello ", "there"),
            // assistant message_update, run_status completed
            let events = try await stream.waitForEvents(count: 8, timeout: .seconds(10))

            #expect(events.map(\.type) == [
                "message_update", "run_status", "run_status", "delta", "delta", "delta", "message_update", "run_status",
            ])
            let user = try #require(events[0].object["message"] as? [String: Any])
            #expect(user["role"] as? String == "user")
            #expect(user["content"] as? String == "hello there")
            #expect(user["id"] as? String == sent.message)
            #expect(events[1].object["status"] as? String == "queued")
            #expect(events[2].object["status"] as? String == "running")
            let deltas = events[3...5].map { $0.object }
            #expect(deltas.map { $0["delta"] as? String ?? "" }.joined() == "echo: hello there")
            #expect(deltas.map { $0["index"] as? Int ?? -1 } == [0, 1, 2])
            #expect(deltas.allSatisfy { $0["message_id"] as? String == sent.assistantMessage })
            let reply = try #require(events[6].object["message"] as? [String: Any])
            #expect(reply["role"] as? String == "assistant")
            #expect(reply["content"] as? String == "echo: hello there")
            #expect(reply["id"] as? String == sent.assistantMessage)
            #expect(events[7].object["status"] as? String == "completed")
            #expect(events.allSatisfy { $0.object["run_id"] as? String == sent.run })

            // Every frame carries the Redis stream id, increasing.
            let ids = events.map(\.lastEventID)
            #expect(ids.allSatisfy { $0.range(of: #"^\d+-\d+$"#, options: .regularExpression) != nil }, "\(ids)")
            #expect(ids == ids.sorted { compareStreamIDs($0, $1) })
            #expect(Set(ids).count == ids.count)

            // The stream's headers and preamble.
            #expect(stream.connection.header("Content-Type") == "text/event-stream")
            #expect(stream.connection.header("Cache-Control") == "no-cache")
            #expect(stream.connection.header("X-Accel-Buffering") == "no")
            #expect(String(decoding: stream.rawBytes.prefix(25), as: UTF8.self) == "retry: 3000\n: connected\n\n")

            // Stored: the user message and the reply, in order.
            let messages = try await api.messages(thread)
            #expect(messages.map { $0["content"] as? String } == ["hello there", "echo: hello there"])
            await stream.connection.closeGracefully()
        }
    }

    @Test("a subscriber on node B receives what the webhook posted to node A produced")
    func twoNodes() async throws {
        try await withStack(nodes: 2) { stack in
            let nodeA = stack.api(node: 0), nodeB = stack.api(node: 1)
            let thread = try await nodeA.createThread()
            let streamOnB = try await nodeB.openStream(thread)
            try await streamOnB.waitForComment(containing: "connected")
            // The engine calls back node A (its PUBLIC_URL).
            _ = try await nodeA.send(thread, "across nodes")
            let events = try await streamOnB.waitForEvents(count: 8)
            let reply = try #require(events.last(where: { $0.type == "message_update" })?.object["message"] as? [String: Any])
            #expect(reply["content"] as? String == "echo: across nodes")
            #expect(events.last?.object["status"] as? String == "completed")
        }
    }

    @Test("deleting a thread publishes thread_deleted and ends its streams")
    func deleteThread() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let deleted = try await api.request("DELETE", "/chats/\(thread)")
            #expect(deleted.status == 204)
            let events = try await stream.waitForEvents(count: 1)
            #expect(events[0].type == "thread_deleted")
            #expect(events[0].object["thread_id"] as? String == thread)
            try await stream.waitForEnd(timeout: .seconds(5))
            let gone = try await api.request("GET", "/chats/\(thread)")
            #expect(gone.status == 404)
            let streamGone = try await api.request("GET", "/chats/sse/\(thread)")
            #expect(streamGone.status == 404)
            #expect(try api.json(streamGone)["error"] != nil)
        }
    }
}

/// Orders Redis stream ids numerically (ms, then sequence).
func compareStreamIDs(_ lhs: String, _ rhs: String) -> Bool {
    let l = lhs.split(separator: "-").compactMap { UInt64($0) }, r = rhs.split(separator: "-").compactMap { UInt64($0) }
    return (l[0], l[1]) < (r[0], r[1])
}
