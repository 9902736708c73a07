import Foundation
import HeraldTestSupport
import Testing

@Suite("response cache: use_cache on send", .serialized, .timeLimit(.minutes(3)))
struct ResponseCacheTests {
    static let metric = "herald_response_cache_total"

    /// Waits until a run's final `run_status` is on `stream`; returns that status.
    func finalStatus(on stream: SSEStream, run: String) async throws -> String? {
        try await eventually("run \(run) ends") {
            stream.events.contains { $0.type == "run_status" && $0.object["run_id"] as? String == run && $0.object["status"] as? String != "queued"
                && $0.object["status"] as? String != "running" }
        }
        return stream.events.last { $0.type == "run_status" && $0.object["run_id"] as? String == run }?.object["status"] as? String
    }

    func cacheCount(_ stack: Stack, _ outcome: String, node: Int = 0) async throws -> Double {
        try await PrometheusScrape.scrape(stack.nodes[node].url).total(Self.metric, ["outcome": outcome]) ?? 0
    }

    @Test("a miss runs the engine and fills the cache; the same question, differently spaced and cased, on another thread and node is a hit without an engine call")
    func missThenHit() async throws {
        try await withStack(nodes: 2, environment: ["HERALD_CACHE_TTL_SECONDS": "60"]) { stack in
            let nodeA = stack.api(node: 0), nodeB = stack.api(node: 1)
            let first = try await nodeA.createThread()
            let firstStream = try await nodeA.connectedStream(first)
            let missed = try await nodeA.send(first, "What is the  Answer?", useCache: true)
            #expect(missed["cached"] == nil)
            let missedRun = try #require((missed["run"] as? [String: Any])?["id"] as? String)
            #expect(try await finalStatus(on: firstStream, run: missedRun) == "completed")
            // An engine run's frames carry no cached mark.
            #expect(!firstStream.events.contains { $0.data.contains("cached") })
            try await eventually("the reply is cached") { try await cacheCount(stack, "stored") == 1 }
            #expect(try await cacheCount(stack, "miss") == 1)
            #expect(try await stack.engineRuns() == 1)

            let second = try await nodeB.createThread()
            let stream = try await nodeB.connectedStream(second)
            let hit = try await nodeB.send(second, "  what IS the answer?\n", useCache: true)
            #expect(hit["cached"] as? Bool == true)
            let run = try #require(hit["run"] as? [String: Any])
            #expect(run["status"] as? String == "completed")
            let runID = try #require(run["id"] as? String), replyID = try #require(run["assistant_message_id"] as? String)
            let userMessage = try #require(hit["message"] as? [String: Any])

            #expect(try await finalStatus(on: stream, run: runID) == "completed")
            let events = stream.events
            let reply = "echo: What is the  Answer?"
            let deltaCount = events.filter { $0.type == "delta" }.count
            #expect(deltaCount >= 3)
            #expect(events.map(\.type) == ["message_update", "run_status"] + Array(repeating: "delta", count: deltaCount) + ["message_update", "run_status"])
            #expect((events[0].object["message"] as? [String: Any])?["id"] as? String == userMessage["id"] as? String)
            #expect(events[0].object["cached"] == nil, "the user's message is new, not from the cache")
            #expect(events[1].object["status"] as? String == "running")
            let deltas = events.filter { $0.type == "delta" }.map(\.object)
            #expect(deltas.map { $0["delta"] as? String ?? "" }.joined() == reply)
            #expect(deltas.map { $0["index"] as? Int ?? -1 } == Array(0..<deltaCount))
            #expect(deltas.allSatisfy { $0["message_id"] as? String == replyID })
            let final = try #require(events[events.count - 2].object["message"] as? [String: Any])
            #expect(final["id"] as? String == replyID)
            #expect(final["role"] as? String == "assistant")
            #expect(final["content"] as? String == reply)
            #expect(events.last?.object["status"] as? String == "completed")
            #expect(events.dropFirst().allSatisfy { $0.object["cached"] as? Bool == true })
            #expect(events.allSatisfy { $0.object["run_id"] as? String == runID })

            // Stored like any exchange; the engine was not asked.
            #expect(try await nodeB.messages(second).map { $0["content"] as? String } == ["  what IS the answer?\n", reply])
            #expect(try await stack.engineRuns() == 1)
            #expect(try await cacheCount(stack, "hit", node: 1) == 1)
            // Nothing more arrives for the cached run.
            try await Task.sleep(for: .milliseconds(300))
            #expect(stream.events.count == events.count)

            // Without use_cache the engine answers, even for a cached question.
            let uncached = try await nodeB.send(second, "what is the answer?", useCache: false)
            #expect(uncached["cached"] == nil)
            try await eventually("the engine gets the uncached send") { try await stack.engineRuns() == 2 }
            await firstStream.connection.closeGracefully()
            await stream.connection.closeGracefully()
        }
    }

    @Test("an entry expires after HERALD_CACHE_TTL_SECONDS: the question then misses and runs again")
    func expiry() async throws {
        try await withStack(environment: ["HERALD_CACHE_TTL_SECONDS": "1"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.connectedStream(thread)
            let first = try await api.send(thread, "short lived", useCache: true)
            let firstRun = try #require((first["run"] as? [String: Any])?["id"] as? String)
            #expect(try await finalStatus(on: stream, run: firstRun) == "completed")
            try await eventually("the reply is cached") { try await cacheCount(stack, "stored") == 1 }
            try await Task.sleep(for: .milliseconds(2200))

            let second = try await api.send(thread, "short lived", useCache: true)
            #expect(second["cached"] == nil)
            #expect((second["run"] as? [String: Any])?["status"] as? String == "queued")
            try await eventually("the engine runs it again") { try await stack.engineRuns() == 2 }
            #expect(try await cacheCount(stack, "miss") == 2)
            #expect(try await cacheCount(stack, "hit") == 0)
            await stream.connection.closeGracefully()
        }
    }

    @Test("failed and timed-out runs are never cached")
    func failedRunsNotCached() async throws {
        try await withStack(environment: ["HERALD_CACHE_TTL_SECONDS": "60", "HERALD_RUN_TIMEOUT_SECONDS": "1"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.connectedStream(thread)
            for (question, ending) in [("[[fail]] a question", "failed"), ("[[silent]] a question", "timed_out")] {
                for attempt in 1...2 {
                    let sent = try await api.send(thread, question, useCache: true)
                    #expect(sent["cached"] == nil, "\(question) attempt \(attempt)")
                    let run = try #require((sent["run"] as? [String: Any])?["id"] as? String)
                    #expect(try await finalStatus(on: stream, run: run) == ending, "\(question) attempt \(attempt)")
                }
            }
            #expect(try await stack.engineRuns() == 4)
            #expect(try await cacheCount(stack, "miss") == 4)
            #expect(try await cacheCount(stack, "stored") == 0)
            #expect(try await cacheCount(stack, "hit") == 0)
            await stream.connection.closeGracefully()
        }
    }

    @Test("with the cache off (the default), use_cache is accepted and every send runs; use_cache must be a boolean")
    func cacheOff() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.connectedStream(thread)
            for attempt in 1...2 {
                let sent = try await api.send(thread, "asked twice", useCache: true)
                #expect(sent["cached"] == nil)
                let run = try #require((sent["run"] as? [String: Any])?["id"] as? String)
                #expect(try await finalStatus(on: stream, run: run) == "completed", "attempt \(attempt)")
            }
            #expect(try await stack.engineRuns() == 2)
            let scrape = try await PrometheusScrape.scrape(stack.url)
            #expect(scrape.total(Self.metric) == nil, "\(scrape.text)")

            for body in [#"{"content": "x", "use_cache": "true"}"#, #"{"content": "x", "use_cache": 1}"#, #"{"content": "x", "use_cache": {}}"#] {
                let response = try await api.request("POST", "/chats/\(thread)/send", json: body)
                #expect(response.status == 422, "\(body): \(response.text)")
                #expect(response.text.contains("use_cache"), "\(body): \(response.text)")
            }
            #expect(try await api.messages(thread).count == 4)
            await stream.connection.closeGracefully()
        }
    }
}
