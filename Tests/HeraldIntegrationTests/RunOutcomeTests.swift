import Foundation
import HeraldTestSupport
import Logging
import PostgresClient
import Testing

@Suite("run outcomes and webhooks", .serialized, .timeLimit(.minutes(3)))
struct RunOutcomeTests {
    /// The captured LangGraph success payload, pointed at one of our runs.
    func langGraphSuccess(thread: String, reply: String) throws -> [UInt8] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../HeraldCoreTests/Fixtures/langgraph-webhook-success.json")
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        object["thread_id"] = thread
        var values = try #require(object["values"] as? [String: Any])
        var messages = try #require(values["messages"] as? [[String: Any]])
        messages[messages.count - 1]["content"] = [["type": "text", "text": reply]]
        values["messages"] = messages
        object["values"] = values
        return Array(try JSONSerialization.data(withJSONObject: object))
    }

    @Test("a retried webhook stores nothing new, publishes nothing new, and still answers 2xx")
    func webhookIdempotency() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let sent = try await api.send(thread, "[[silent]] wait for me")
            _ = try await stream.waitForEvents(count: 3)  // user message, queued, running

            let body = try langGraphSuccess(thread: thread, reply: "from the fixture")
            // The second delivery repeats the first one's webhook-id; the third is a fresh delivery of the same
            // result: both are recognised, one by the delivery id, one by the run.
            for (attempt, deliveryID) in zip(1...3, ["msg_first", "msg_first", "msg_third"]) {
                // LangGraph's JS server posts JSON as text/plain.
                let response = try await api.postWebhook(
                    body, query: "?run_id=\(sent.run)", contentType: "text/plain;charset=UTF-8", deliveryID: deliveryID
                )
                #expect(response.status == 200, "attempt \(attempt): \(response.text)")
                #expect(try api.json(response)["status"] as? String == (attempt == 1 ? "accepted" : "duplicate"))
            }
            let events = try await stream.waitForEvents(count: 5)
            #expect(events[3].type == "message_update")
            #expect((events[3].object["message"] as? [String: Any])?["content"] as? String == "from the fixture")
            #expect(events[4].object["status"] as? String == "completed")
            // Nothing more arrives.
            try await Task.sleep(for: .milliseconds(500))
            #expect(stream.events.count == 5)
            let messages = try await api.messages(thread)
            #expect(messages.count == 2)
        }
    }

    @Test("deltas that overtake the engine's answer to the trigger: `running` goes out once, before the first delta")
    func deltasBeforeTheTriggerReturns() async throws {
        // The engine posts its deltas while Herald still waits for the trigger's answer, as a fast engine under load does.
        let answer = DispatchSemaphore(value: 0)
        let engine = try TestHTTPServer { _, _ in
            answer.wait()
            return .respond(status: 202, headers: [("Content-Type", "application/json")], body: Array("{}".utf8))
        }
        defer { engine.stop() }
        try await withStack(agent: .external(engine.url), environment: ["AGENT_KIND": "generic"]) { stack in
            defer { answer.signal() }
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let sent = try await api.send(thread, "be quick")
            try await eventually("the engine is triggered") { !engine.requests.isEmpty }
            #expect(api.outcome(try await api.delta(run: sent.run, index: 0, "Hel")) == "accepted")
            #expect(api.outcome(try await api.webhook(["run_id": sent.run, "event": "delta", "delta": "lo"])) == "accepted")
            let early = try await stream.waitForEvents(count: 5)
            #expect(early.map(\.type) == ["message_update", "run_status", "run_status", "delta", "delta"])
            #expect(early.filter { $0.type == "run_status" }.map { $0.object["status"] as? String } == ["queued", "running"])
            // The delta without an index took the next one: the `running` mark is not counted as a delta.
            #expect(early.filter { $0.type == "delta" }.map { $0.object["index"] as? Int } == [0, 1])

            answer.signal()
            let pool = PostgresPool(configuration: .init(connectionString: stack.databaseURL, poolSize: 1), logger: Logger(label: "test"))
            try await eventually("the trigger's answer is recorded") {
                try await pool.query("SELECT status FROM runs WHERE id = $1::uuid", [sent.run]).rows.first?["status"] == "running"
            }
            await pool.shutdown()
            #expect(api.outcome(try await api.webhook(["run_id": sent.run, "event": "completed", "content": "Hello"])) == "accepted")
            let events = try await stream.waitForEvents(count: 7)
            #expect(events.suffix(2).map(\.type) == ["message_update", "run_status"])
            #expect(events.filter { $0.object["status"] as? String == "running" }.count == 1, "\(events.map(\.type))")
            try await Task.sleep(for: .milliseconds(300))
            #expect(stream.events.count == 7, "\(stream.events.map(\.type))")
        }
    }

    @Test("engine down: the run fails after retries and an error frame is published")
    func engineDown() async throws {
        try await withStack(agent: .unreachable, environment: ["HERALD_AGENT_MAX_ATTEMPTS": "2"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let sent = try await api.send(thread, "anyone there?")
            let events = try await stream.waitForEvents(count: 4, timeout: .seconds(15))
            #expect(events.map(\.type) == ["message_update", "run_status", "error", "run_status"])
            let error = try #require(events[2].object["error"] as? [String: Any])
            #expect(error["code"] as? String == "agent_unreachable")
            #expect(events[2].object["run_id"] as? String == sent.run)
            #expect(events[3].object["status"] as? String == "failed")
        }
    }

    @Test("an engine that never calls back: the run times out with an error frame")
    func runTimeout() async throws {
        try await withStack(environment: ["HERALD_RUN_TIMEOUT_SECONDS": "1"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            _ = try await api.send(thread, "[[silent]] never answered")
            let events = try await stream.waitForEvents(count: 5, timeout: .seconds(10))
            #expect(events.map(\.type) == ["message_update", "run_status", "run_status", "error", "run_status"])
            #expect((events[3].object["error"] as? [String: Any])?["code"] as? String == "run_timed_out")
            #expect(events[4].object["status"] as? String == "timed_out")
            // A late answer changes nothing.
            let late = try await api.postWebhook(
                json: #"{"run_id":"\#(events[4].object["run_id"] as? String ?? "")","event":"completed","content":"too late"}"#
            )
            #expect(late.status == 200)
            #expect(try api.json(late)["status"] as? String == "duplicate")
            #expect(try await api.messages(thread).count == 1)
        }
    }

    @Test("an engine-reported error fails the run with its message")
    func engineError() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            _ = try await api.send(thread, "[[fail]] please")
            let events = try await stream.waitForEvents(count: 5)
            #expect(events[3].type == "error")
            #expect((events[3].object["error"] as? [String: Any])?["message"] as? String == "the graph was asked to fail")
            #expect(events[4].object["status"] as? String == "failed")
        }
    }
}

@Suite("deltas without a database read", .timeLimit(.minutes(3)))
struct OpenRunDeltaTests {
    @Test("a delta after the run's final frames is ignored on every node, even one that still takes the run for open")
    func deltaAfterFinalOnAnotherNode() async throws {
        try await withStack(nodes: 2) { stack in
            let nodeA = stack.api(node: 0), nodeB = stack.api(node: 1)
            let thread = try await nodeA.createThread()
            let stream = try await nodeA.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            // Node A created the run (the demo agent never answers this one), so it knows the run is open.
            let sent = try await nodeA.send(thread, "[[silent]] stays open")
            #expect(nodeA.outcome(try await nodeA.delta(run: sent.run, index: 0, "first ")) == "accepted")
            // The result reaches node B; node A hears nothing of it.
            #expect(nodeB.outcome(try await nodeB.webhook(["run_id": sent.run, "event": "completed", "content": "first done"])) == "accepted")
            // A late delta reaches node A, which still takes the run for open: Redis refuses it.
            #expect(nodeA.outcome(try await nodeA.delta(run: sent.run, index: 1, "late")) == "ignored")
            #expect(nodeA.outcome(try await nodeA.delta(run: sent.run, index: 0, "first ")) == "ignored")

            // On the stream: the delta, the final message and status, and nothing after them.
            let events = try await stream.waitForEvents(count: 6)
            // (`running` precedes the first delta: see `deltasBeforeTheTriggerReturns`.)
            #expect(events.map(\.type).sorted() == ["delta", "message_update", "message_update", "run_status", "run_status", "run_status"])
            #expect(events.suffix(2).map(\.type) == ["message_update", "run_status"])
            #expect(events.last?.object["status"] as? String == "completed")
            try await Task.sleep(for: .milliseconds(300))
            #expect(stream.events.count == 6, "\(stream.events.map(\.type))")
            #expect(!stream.events.contains { $0.type == "delta" && $0.object["index"] as? Int == 1 })
        }
    }
}

@Suite("outbox recovery", .timeLimit(.minutes(3)))
struct OutboxRecoveryTests {
    @Test("a final run whose publisher died after claiming it is published by the sweeper once the claim expires")
    func abandonedClaim() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let sent = try await api.send(thread, "[[silent]] the node will die")
            _ = try await stream.waitForEvents(count: 3)
            // What a node leaves behind when it dies between claiming the publication and publishing:
            // a final run, not published, with a claim a minute old.
            let pool = PostgresPool(configuration: .init(connectionString: stack.databaseURL, poolSize: 1), logger: Logger(label: "test"))
            let updated = try await pool.query(
                """
                UPDATE runs SET status = 'failed', error_code = 'engine_crashed', error_message = 'gone',
                    publish_claimed_at = clock_timestamp() - interval '1 minute', updated_at = clock_timestamp() - interval '1 minute'
                WHERE id = $1::uuid
                """,
                [sent.run]
            )
            await pool.shutdown()
            #expect(updated.affectedRows == 1)
            let events = try await stream.waitForEvents(count: 5, timeout: .seconds(10))
            #expect(events[3].type == "error")
            #expect((events[3].object["error"] as? [String: Any])?["code"] as? String == "engine_crashed")
            #expect(events[4].object["status"] as? String == "failed")
            try await Task.sleep(for: .seconds(2))
            #expect(stream.events.count == 5, "published once")
        }
    }
}
