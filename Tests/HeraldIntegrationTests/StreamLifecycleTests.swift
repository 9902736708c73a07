import Foundation
import HeraldTestSupport
import Testing

@Suite("stream lifecycle", .serialized, .timeLimit(.minutes(3)))
struct StreamLifecycleTests {
    @Test("an idle stream gets heartbeats")
    func heartbeat() async throws {
        try await withStack(environment: ["HERALD_HEARTBEAT_SECONDS": "0.2"]) { stack in
            let api = stack.api()
            let stream = try await api.openStream(try await api.createThread())
            try await stream.waitForComment(containing: "heartbeat", timeout: .seconds(3))
            #expect(stream.events.isEmpty)
        }
    }

    @Test("a watched thread's owner is known without PostgreSQL, yet strangers and deleted threads still get 404")
    func knownOwner() async throws {
        try await withStack { stack in
            let alice = stack.api(user: "alice"), bob = stack.api(user: "bob")
            let thread = try await alice.createThread()
            let first = try await alice.openStream(thread)
            try await first.waitForComment(containing: "connected")
            // With the thread watched here, a second stream of its owner opens, and nobody else's does.
            let second = try await alice.openStream(thread)
            try await second.waitForComment(containing: "connected")
            #expect(try await bob.request("GET", "/chats/sse/\(thread)").status == 404)

            #expect(try await alice.request("DELETE", "/chats/\(thread)").status == 204)
            try await first.waitForEnd(timeout: .seconds(5))
            try await second.waitForEnd(timeout: .seconds(5))
            #expect(try await alice.request("GET", "/chats/sse/\(thread)").status == 404)
        }
    }

    @Test("vanished clients are cleaned up: registry empty, NUMSUB 0, one subscriber connection throughout")
    func cleanupAfterKilledClients() async throws {
        try await withStack(environment: ["HERALD_MAX_STREAMS_PER_USER": "100"]) { stack in
            let api = stack.api()
            let threads = [try await api.createThread(), try await api.createThread(), try await api.createThread()]
            func subscriberConnections() async throws -> Int {
                try await stack.redis.command("CLIENT", "LIST").split(separator: "\n").filter { $0.contains("name=herald-sub-") }.count
            }
            #expect(try await subscriberConnections() == 1)

            var streams: [SSEStream] = []
            for index in 0..<30 {
                let stream = try await api.openStream(threads[index % threads.count])
                try await stream.waitForComment(containing: "connected")
                streams.append(stream)
            }
            #expect(try await api.metric("herald_sse_connections") == 30)
            #expect(try await api.metric("herald_subscribed_threads") == 3)
            #expect(try await subscriberConnections() == 1)
            for thread in threads {
                let numsub = try await stack.redis.command("PUBSUB", "NUMSUB", "sse:thread:\(thread)")
                #expect(numsub.split(separator: "\n").last == "1", "NUMSUB \(numsub)")
            }

            // Vanish: abortive closes (RST) for most, a polite close for a few.
            for (index, stream) in streams.enumerated() {
                if index % 5 == 0 { await stream.connection.closeGracefully() } else { stream.connection.kill() }
            }
            try await eventually(timeout: .seconds(5), "registry empty") {
                let connections = try await api.metric("herald_sse_connections")
                let subscribed = try await api.metric("herald_subscribed_threads")
                return connections == 0 && subscribed == 0
            }
            for thread in threads {
                try await eventually(timeout: .seconds(5), "NUMSUB 0 for \(thread)") {
                    try await stack.redis.command("PUBSUB", "NUMSUB", "sse:thread:\(thread)").split(separator: "\n").last == "0"
                }
            }
            #expect(try await subscriberConnections() == 1)
        }
    }

    @Test("SIGTERM closes open streams promptly and the process exits")
    func gracefulShutdown() async throws {
        try await withStack { stack in
            let api = stack.api()
            let stream = try await api.openStream(try await api.createThread())
            try await stream.waitForComment(containing: "connected")
            let started = ContinuousClock.now
            stack.node.process.signal(SIGTERM)
            try await stream.waitForEnd(timeout: .seconds(5))
            let status = try await stack.node.process.waitForExit(timeout: .seconds(10))
            #expect(status == 0)
            #expect(ContinuousClock.now - started < .seconds(5))
        }
    }

    @Test("an unknown thread's stream is a 404 JSON error")
    func unknownThread() async throws {
        try await withStack { stack in
            let response = try await stack.api().request("GET", "/chats/sse/\(UUID().uuidString.lowercased())")
            #expect(response.status == 404)
            #expect(response.header("Content-Type")?.hasPrefix("application/json") == true)
            let error = try #require(try stack.api().json(response)["error"] as? [String: Any])
            #expect(error["code"] as? String == "not_found")
        }
    }
}
