import Foundation
import HeraldTestSupport
import Testing

/// Gapless streams: Last-Event-ID resume, token deltas, slow consumers, Redis outages. Real Redis, PostgreSQL,
/// demo agent and Herald processes. Runs whose content has `[[silent]]` are never answered by the demo agent,
/// so the tests post the deltas and results themselves.
@Suite("gapless streams: resume, deltas, slow consumers, outages", .serialized, .timeLimit(.minutes(3)))
struct GaplessStreamTests {
    /// Sends a silent message on a live stream and waits for its three frames (user message, queued, running).
    private func silentRun(_ api: API, _ thread: String, on stream: SSEStream, content: String) async throws -> (message: String, run: String, assistantMessage: String) {
        let sent = try await api.send(thread, "[[silent]] \(content)")
        let events = try await stream.waitForEvents(count: 3)
        #expect(events.map(\.type) == ["message_update", "run_status", "run_status"])
        return sent
    }

    /// How long a wait for a steadily published delta may take: the whole suite on two cores can slow the posts
    /// down many times over (seen: 30 deltas in 10 s), and this test is about order and completeness, not pace.
    static let publishing: Duration = .seconds(40)

    @Test("reconnecting with Last-Event-ID while frames keep coming: every frame exactly once, in order")
    func resumeWhilePublishing() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let first = try await api.openStream(thread)
            try await first.waitForComment(containing: "connected")
            let sent = try await silentRun(api, thread, on: first, content: "keep streaming")
            let total = 200
            let publisher = DeltaPublisher.steady(api: api, run: sent.run, indexes: 0..<total, interval: .milliseconds(10))

            // Connection 1 reads some frames and vanishes; connection 2 resumes with the header (an EventSource
            // reconnect), reads some and vanishes; connection 3 resumes with the query parameter (a page reload).
            try await first.waitForDelta(40, timeout: Self.publishing)
            await first.connection.killAndWait()
            try await first.waitForEnd()
            let firstEvents = first.events
            let afterFirst = try #require(firstEvents.last?.lastEventID)

            let second = try await api.openStream(thread, headers: [("Last-Event-ID", afterFirst)])
            let secondReached = (firstEvents.compactMap(\.deltaIndex).last ?? 0) + 40
            try await second.waitForDelta(secondReached, timeout: Self.publishing)
            await second.connection.killAndWait()
            try await second.waitForEnd()
            let secondEvents = second.events
            let afterSecond = try #require(secondEvents.last?.lastEventID)

            let third = try await api.openStream(thread, query: "?last_event_id=\(afterSecond)")
            try await publisher.finish()
            try await third.waitForDelta(total - 1, timeout: Self.publishing)
            try await Task.sleep(for: .milliseconds(300))  // a duplicate or stray frame would arrive by now
            let thirdEvents = third.events

            let log = try await stack.logIDs(thread)
            #expect(log.count == 3 + total)
            let all = firstEvents + secondEvents + thirdEvents
            #expect(mismatch(all.map(\.lastEventID), log) == nil, "the union of the three connections differs from the log")
            #expect(mismatch(all.compactMap(\.deltaIndex), Array(0..<total)) == nil)
            // Each resumed connection started right after the id it was given.
            #expect(secondEvents.first?.lastEventID == log.first { compareStreamIDs(afterFirst, $0) })
            #expect(thirdEvents.first?.lastEventID == log.first { compareStreamIDs(afterSecond, $0) })
            #expect(secondEvents.count > 1 && thirdEvents.count > 1)
            await third.connection.closeGracefully()
        }
    }

    @Test("a Last-Event-ID older than the trimmed log starts with resync at the newest id, then goes on live")
    func resyncAfterTrim() async throws {
        try await withStack(environment: ["HERALD_LOG_MAXLEN": "5"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let live = try await api.openStream(thread)
            try await live.waitForComment(containing: "connected")
            let sent = try await silentRun(api, thread, on: live, content: "trim me")
            let firstID = live.events[0].lastEventID
            // `MAXLEN ~` trims whole radix-tree nodes (~100 entries): a few hundred frames are sure to trim.
            let total = 300
            try await DeltaPublisher.burst(api: api, run: sent.run, indexes: 0..<total, concurrency: 1) { "t\($0) " }.finish()
            try await live.waitForDelta(total - 1)

            let log = try await stack.logIDs(thread)
            try #require(log.count < 3 + total, "the log was not trimmed: \(log.count) entries")
            #expect(!log.contains(firstID))

            let resumed = try await api.openStream(thread, headers: [("Last-Event-ID", firstID)])
            let resync = try await resumed.waitForEvents(count: 1)[0]
            #expect(resync.type == "resync")
            #expect(resync.object["thread_id"] as? String == thread)
            #expect(resync.object["reason"] as? String == "log_trimmed")
            // The resync frame carries the newest id, so the client's next reconnect resumes from there.
            #expect(resync.lastEventID == log.last)

            // Live from there on, with nothing from the log replayed.
            let next = try await api.delta(run: sent.run, index: total, "after the resync")
            #expect(next.status == 200)
            try await resumed.waitForDelta(total)
            try await Task.sleep(for: .milliseconds(200))
            let events = resumed.events
            #expect(events.map(\.type) == ["resync", "delta"])
            #expect(events.last?.lastEventID == (try await stack.logIDs(thread)).last)
            #expect(mismatch(live.events.compactMap(\.deltaIndex), Array(0...total)) == nil)
        }
    }

    @Test("a malformed Last-Event-ID (header or query) starts with resync, then goes on live")
    func resyncForMalformedIDs() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let sent = try await api.send(thread, "[[silent]] garbage ids")
            // The log already holds frames (user message, queued, running): none of them may be replayed.
            try await eventually("the run is running") { try await stack.logLength(thread) == 3 }

            let byHeader = try await api.openStream(thread, headers: [("Last-Event-ID", "abc")])
            let byQuery = try await api.openStream(thread, query: "?last_event_id=1-2-3")
            for stream in [byHeader, byQuery] {
                let first = try await stream.waitForEvents(count: 1)[0]
                #expect(first.type == "resync")
                #expect(first.object["thread_id"] as? String == thread)
                #expect(first.object["reason"] as? String == "malformed_last_event_id")
            }
            let response = try await api.delta(run: sent.run, index: 0, "live")
            #expect(response.status == 200)
            let log = try await stack.logIDs(thread)
            for stream in [byHeader, byQuery] {
                try await stream.waitForDelta(0)
                try await Task.sleep(for: .milliseconds(100))
                #expect(stream.events.map(\.type) == ["resync", "delta"])
                #expect(stream.events.last?.lastEventID == log.last)
            }
        }
    }

    @Test("native deltas: published with their index, repeats once, out-of-order as they come, not stored")
    func deltas() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let sent = try await silentRun(api, thread, on: stream, content: "deltas")

            var outcomes: [String?] = []
            for (index, text) in [(1, "world"), (0, "hello "), (1, "world"), (2, "!"), (0, "hello ")] {
                let response = try await api.delta(run: sent.run, index: index, text)
                #expect(response.status == 200)
                outcomes.append(api.outcome(response))
            }
            #expect(outcomes == ["accepted", "accepted", "duplicate", "accepted", "duplicate"])
            let events = try await stream.waitForEvents(count: 6)
            try await Task.sleep(for: .milliseconds(300))
            #expect(stream.events.count == 6, "a repeated delta was published again")
            let deltas = events[3...]
            #expect(deltas.map(\.type) == ["delta", "delta", "delta"])
            #expect(deltas.compactMap(\.deltaIndex) == [1, 0, 2])
            #expect(deltas.map { $0.object["delta"] as? String } == ["world", "hello ", "!"])
            #expect(deltas.allSatisfy {
                $0.object["run_id"] as? String == sent.run && $0.object["message_id"] as? String == sent.assistantMessage
                    && $0.object["thread_id"] as? String == thread
            })
            // Kept in the log, not in PostgreSQL.
            #expect(try await stack.logIDs(thread) == events.map(\.lastEventID))
            let messages = try await api.messages(thread)
            #expect(messages.map { $0["role"] as? String } == ["user"])
        }
    }

    @Test("a reader that cannot keep up is disconnected and counted; a fast reader of the same thread gets everything")
    func slowConsumer() async throws {
        try await withStack(environment: ["HERALD_STREAM_QUEUE_FRAMES": "64", "HERALD_STREAM_QUEUE_BYTES": "1048576"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let fast = try await api.openStream(thread)
            let slow = try await api.openStream(thread, receiveBufferSize: 4096)
            try await fast.waitForComment(containing: "connected")
            try await slow.waitForComment(containing: "connected")
            await slow.connection.pauseReading()
            let sent = try await silentRun(api, thread, on: fast, content: "slow and fast")

            let total = try await DeltaPublisher.floodUntilCut(api: api, run: sent.run, counter: "herald_sse_disconnects_total")

            // The fast reader got every delta exactly once and is still connected.
            try await eventually(timeout: .seconds(5), "the fast reader has every delta") {
                fast.events.count >= 3 + total
            }
            let indexes = fast.events.compactMap(\.deltaIndex)
            #expect(mismatch(indexes.sorted(), Array(0..<total)) == nil, "the fast reader missed or repeated deltas")
            #expect(!fast.isEnded, "the fast reader was disconnected: \(fast.endError ?? "")")
            #expect(try await api.metric("herald_sse_connections") == 1)

            // The slow reader's connection is really closed: reading again, it finds the end, short of the frames.
            await slow.connection.resumeReading()
            try await slow.waitForEnd(timeout: .seconds(5))
            #expect(slow.events.compactMap(\.deltaIndex).count < total)

            // The fast reader goes on live.
            #expect(try await api.delta(run: sent.run, index: total, "more").status == 200)
            try await fast.waitForDelta(total)
            #expect(try await api.metric("herald_sse_disconnects_total", label: DeltaPublisher.slowConsumer) == 1)
        }
    }

    @Test("the subscriber connection killed (CLIENT KILL TYPE pubsub) while frames flow: every open stream gets every frame once")
    func subscriberConnectionKilled() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let a = try await api.openStream(thread)
            let b = try await api.openStream(thread)
            try await a.waitForComment(containing: "connected")
            try await b.waitForComment(containing: "connected")
            let sent = try await silentRun(api, thread, on: a, content: "subscriber outage")
            _ = try await b.waitForEvents(count: 3)
            // A third stream that began as a resume, a fourth that began with a malformed id (resync).
            let resumed = try await api.openStream(thread, headers: [("Last-Event-ID", a.events[0].lastEventID)])
            _ = try await resumed.waitForEvents(count: 2)
            let garbled = try await api.openStream(thread, query: "?last_event_id=abc")
            #expect(try await garbled.waitForEvents(count: 1)[0].type == "resync")
            // An outage before anything new is published: a stream that has sent no frame yet catches up from where
            // it began, not from the start of the log.
            #expect(try await stack.redis.command("CLIENT", "KILL", "TYPE", "pubsub") == "1")
            try await Task.sleep(for: .milliseconds(100))
            try await eventually("the subscriber is back") { await api.isReady() }

            let total = 200
            let publisher = DeltaPublisher.steady(api: api, run: sent.run, indexes: 0..<total, interval: .milliseconds(10))
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await stack.redis.command("CLIENT", "KILL", "TYPE", "pubsub") == "1")
            try await Task.sleep(for: .milliseconds(600))
            #expect(try await stack.redis.command("CLIENT", "KILL", "TYPE", "pubsub") == "1", "the subscriber did not reconnect")
            try await publisher.finish()

            for stream in [a, b, resumed, garbled] {
                try await stream.waitForDelta(total - 1)
            }
            try await Task.sleep(for: .milliseconds(300))
            let log = try await stack.logIDs(thread)
            #expect(log.count == 3 + total)
            let expectations = [
                ("a", a, log), ("b", b, log), ("resumed", resumed, Array(log.dropFirst())),
                ("garbled", garbled, [""] + log.dropFirst(3)),
            ]
            for (name, stream, expected) in expectations {
                #expect(mismatch(stream.events.map(\.lastEventID), expected) == nil, "stream \(name) differs from the log")
                #expect(mismatch(stream.events.compactMap(\.deltaIndex), Array(0..<total)) == nil, "stream \(name)")
            }
            #expect(await api.isReady())
            let subscribers = try await stack.redis.command("CLIENT", "LIST").split(separator: "\n").filter { $0.contains("name=herald-sub-") }
            #expect(subscribers.count == 1)
        }
    }

    @Test("Redis stopped and restarted: webhooks get 503, the retry stores and publishes each message once")
    func redisRestart() async throws {
        try await withStack(redisPersistence: true) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let sent = try await silentRun(api, thread, on: stream, content: "outage")

            try await stack.redis.stop()
            let completed: [String: Any] = ["run_id": sent.run, "event": "completed", "content": "after the outage"]
            let delta = try await api.delta(run: sent.run, index: 0, "tok")
            #expect(delta.status == 503, "\(delta.text)")
            let result = try await api.webhook(completed)
            #expect(result.status == 503, "\(result.text)")
            #expect((try api.json(result)["error"] as? [String: Any])?["code"] as? String == "dependency_unavailable")
            // A send while Redis is down is refused and leaves nothing behind.
            let body = try JSONSerialization.data(withJSONObject: ["content": "lost in the outage"])
            let refused = try await api.request("POST", "/chats/\(thread)/send", headers: [("Content-Type", "application/json")], body: Array(body))
            #expect(refused.status == 503, "\(refused.text)")
            #expect(!(try await api.messages(thread)).contains { $0["content"] as? String == "lost in the outage" })

            try await stack.redis.restart()
            try await eventually(timeout: .seconds(8), "node ready again") { await api.isReady() }
            let retried = try await api.webhook(completed)
            #expect(retried.status == 200, "\(retried.text)")
            let again = try await api.webhook(completed)
            #expect(again.status == 200)
            #expect(api.outcome(again) == "duplicate")

            let events = try await stream.waitForEvents(count: 5, timeout: .seconds(8))
            try await Task.sleep(for: .milliseconds(500))
            #expect(stream.events.count == 5, "published more than once: \(stream.events.map(\.type))")
            #expect(events[3].type == "message_update")
            #expect((events[3].object["message"] as? [String: Any])?["content"] as? String == "after the outage")
            #expect(events[4].type == "run_status")
            #expect(events[4].object["status"] as? String == "completed")
            #expect(!stream.isEnded)
            // Once in the log (the stream above saw it once), once in PostgreSQL.
            #expect(try await stack.logIDs(thread) == events.map(\.lastEventID))
            let messages = try await api.messages(thread)
            #expect(messages.map { $0["content"] as? String } == ["[[silent]] outage", "after the outage"])
        }
    }

    @Test("?last_event_id=0 after the run finished replays the whole run from the log, then goes on live")
    func replayFinishedRun() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let live = try await api.openStream(thread)
            try await live.waitForComment(containing: "connected")
            // "echo: replay me" streams as three deltas: "echo: ", "replay ", "me".
            let sent = try await api.send(thread, "replay me")
            let original = try await live.waitForEvents(count: 8)
            #expect(original.last?.object["status"] as? String == "completed")

            let replay = try await api.openStream(thread, query: "?last_event_id=0")
            let replayed = try await replay.waitForEvents(count: 8)
            try await Task.sleep(for: .milliseconds(300))
            #expect(replay.events.count == 8)
            #expect(mismatch(replayed.map(\.lastEventID), original.map(\.lastEventID)) == nil)
            #expect(replayed == original)
            #expect(replayed.map(\.type) == [
                "message_update", "run_status", "run_status", "delta", "delta", "delta", "message_update", "run_status",
            ])
            #expect((replayed[0].object["message"] as? [String: Any])?["id"] as? String == sent.message)
            #expect(replayed[3...5].map { $0.object["delta"] as? String ?? "" }.joined() == "echo: replay me")
            #expect(replayed[3...5].map(\.deltaIndex) == [0, 1, 2])
            #expect((replayed[6].object["message"] as? [String: Any])?["content"] as? String == "echo: replay me")
            #expect(replayed.allSatisfy { $0.object["run_id"] as? String == sent.run })

            // Then live: the next send shows up after the replay.
            _ = try await api.send(thread, "[[silent]] and then")
            let next = try await replay.waitForEvents(count: 9)
            #expect(next[8].type == "message_update")
            #expect((next[8].object["message"] as? [String: Any])?["content"] as? String == "[[silent]] and then")
        }
    }
}

@Suite("PostgreSQL outage", .timeLimit(.minutes(3)))
struct PostgresOutageTests {
    @Test("PostgreSQL unreachable: sends, webhooks and new streams of unwatched threads get 503, nothing is published, readiness says why")
    func postgresDown() async throws {
        // Its own server: stopping the shared one would take every other suite down with it.
        let postgres = try await PostgresServer.start()
        try await withStack(postgres: postgres) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let unwatched = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let sent = try await api.send(thread, "[[silent]] before the outage")
            _ = try await stream.waitForEvents(count: 3)
            let logBefore = try await stack.redis.command("XLEN", "sse:thread:\(thread):log")

            try await postgres.stop()
            let send = try await api.request(
                "POST", "/chats/\(thread)/send", headers: [("Content-Type", "application/json")], body: Array(#"{"content":"during"}"#.utf8)
            )
            #expect(send.status == 503, "\(send.text)")
            let result = try await api.webhook(["run_id": sent.run, "event": "completed", "content": "lost?"])
            #expect(result.status == 503, "\(result.text)")
            #expect((try api.json(result)["error"] as? [String: Any])?["code"] as? String == "dependency_unavailable")
            // A thread nobody watches on this node needs PostgreSQL to tell its owner; one watched here does not.
            let newStream = try await api.request("GET", "/chats/sse/\(unwatched)")
            #expect(newStream.status == 503)
            let secondStream = try await api.openStream(thread)
            try await secondStream.waitForComment(containing: "connected")
            await secondStream.connection.closeGracefully()
            let ready = try await TestHTTPClient.request("GET", "\(stack.url)/readyz")
            #expect(ready.status == 503)
            #expect(try api.json(ready)["postgres"] as? String == "unavailable")

            // Nothing half-written reached the stream or the log.
            try await Task.sleep(for: .milliseconds(300))
            #expect(stream.events.count == 3)
            #expect(try await stack.redis.command("XLEN", "sse:thread:\(thread):log") == logBefore)
            #expect(stack.node.process.isRunning)
        }
    }
}
