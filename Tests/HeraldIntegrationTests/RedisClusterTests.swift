import Foundation
import HeraldTestSupport
import Testing

/// Herald on a real Redis Cluster (3 masters, 3 replicas, `redis-server` in cluster mode): keys and sharded
/// channels routed by slot, a master killed and replaced, a slot migrated under live streams.
@Suite("Redis Cluster: sharded pub/sub on a real 3+3 cluster", .serialized, .timeLimit(.minutes(4)))
struct RedisClusterTests {
    /// The stack's own single Redis is started too, and unused: every node gets the cluster instead.
    func withClusterStack(nodes: Int = 2, _ body: (Stack, RedisCluster) async throws -> Void) async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.terminate() }
        do {
            try await withStack(nodes: nodes, environment: ["REDIS_URL": "redis+cluster://" + cluster.nodesSetting]) { stack in
                try await body(stack, cluster)
            }
        } catch {
            Issue.record("cluster logs:\n\(cluster.logs().suffix(3000))")
            throw error
        }
    }

    /// Threads created until at least `perMaster` of them live on each master; each with its master's port.
    func threadsOnEveryMaster(_ api: API, _ cluster: RedisCluster, perMaster: Int = 1) async throws -> [(thread: String, master: Int)] {
        var threads: [(thread: String, master: Int)] = []
        var counts: [Int: Int] = [:]
        while counts.count < 3 || counts.values.contains(where: { $0 < perMaster }) {
            #expect(threads.count < 60, "threads do not spread over the shards")
            let thread = try await api.createThread()
            let master = try await cluster.master(ofSlot: cluster.slot(of: "sse:thread:{\(thread)}")).port
            guard counts[master, default: 0] < perMaster else { continue }
            counts[master, default: 0] += 1
            threads.append((thread, master))
        }
        return threads
    }

    /// Posts native deltas `indexes` of `run` one after another, each retried after a 503 (as an engine retries a
    /// webhook) until it is answered 200.
    static func publishRetrying(_ api: API, run: String, indexes: Range<Int>, interval: Duration) -> Task<Void, any Error> {
        Task {
            for index in indexes {
                let deadline = ContinuousClock.now + .seconds(30)
                while true {
                    let response = try await api.delta(run: run, index: index, "t\(index) ")
                    if response.status == 200 {
                        #expect(["accepted", "duplicate"].contains(api.outcome(response)), "delta \(index): \(response.text)")
                        break
                    }
                    #expect(response.status == 503, "delta \(index): \(response.status) \(response.text)")
                    #expect(ContinuousClock.now < deadline, "delta \(index) still refused")
                    guard ContinuousClock.now < deadline else { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                try await Task.sleep(for: interval)
            }
        }
    }

    /// The ids in a thread's log on its shard, oldest first.
    func logIDs(_ cluster: RedisCluster, _ thread: String) async throws -> [String] {
        let master = try await cluster.master(ofSlot: cluster.slot(of: "sse:thread:{\(thread)}")).port
        let output = try await cluster.command(port: master, "XRANGE", "sse:thread:{\(thread)}:log", "-", "+")
        return output.split(separator: "\n").map(String.init).filter { $0.range(of: #"^\d+-\d+$"#, options: .regularExpression) != nil }
    }

    @Test("the whole loop with threads on every shard and two nodes: every frame once, in order, equal to the shard's log")
    func wholeLoopOnEveryShard() async throws {
        try await withClusterStack { stack, cluster in
            let nodeA = stack.api(node: 0), nodeB = stack.api(node: 1)
            let threads = try await threadsOnEveryMaster(nodeA, cluster)
            let slots = Set(threads.map { cluster.slot(of: "sse:thread:{\($0.thread)}") })
            #expect(Set(threads.map(\.master)).count == 3 && slots.count == threads.count, "\(threads)")

            var streams: [(SSEStream, SSEStream)] = []
            for (thread, _) in threads {
                let pair = (try await nodeA.openStream(thread), try await nodeB.openStream(thread))
                try await pair.0.waitForComment(containing: "connected")
                try await pair.1.waitForComment(containing: "connected")
                streams.append(pair)
            }
            for (index, (thread, _)) in threads.enumerated() {
                _ = try await (index.isMultiple(of: 2) ? nodeA : nodeB).send(thread, "hello shard \(index)")
            }
            for ((thread, master), (a, b)) in zip(threads, streams) {
                try await a.waitForEvent { $0.type == "run_status" && $0.object["status"] as? String == "completed" }
                try await b.waitForEvent { $0.type == "run_status" && $0.object["status"] as? String == "completed" }
                let types = a.events.map(\.type)
                #expect(types.first == "message_update" && types.last == "run_status" && types.filter { $0 == "delta" }.count > 3, "\(types)")
                #expect(a.events == b.events, "the two nodes' streams of \(thread) differ")
                #expect(mismatch(a.events.compactMap(\.deltaIndex), Array(0..<a.events.compactMap(\.deltaIndex).count)) == nil)
                let log = try await logIDs(cluster, thread)
                #expect(mismatch(a.events.map(\.lastEventID), log) == nil, "stream of \(thread) differs from its log")
                // One sharded subscription per node, on the master that owns the thread's slot.
                let subscribers = try await cluster.command(port: master, "PUBSUB", "SHARDNUMSUB", "sse:thread:{\(thread)}")
                #expect(subscribers.split(separator: "\n").last == "2", "\(subscribers)")
            }

            let ready = try await TestHTTPClient.request("GET", "\(stack.nodes[0].url)/readyz")
            let shards = try #require(try nodeA.json(ready)["redis_shards"] as? [String: String], "\(ready.text)")
            #expect(ready.status == 200 && shards.count == 3 && shards.values.allSatisfy { $0 == "ok" }, "\(ready.text)")
            // The answer is what the OpenAPI document says readiness answers.
            let contract = ContractRecorder()
            contract.response("GET", "/readyz", ready)
            try await contract.check(document: try await TestHTTPClient.request("GET", "\(stack.nodes[0].url)/openapi.json").body)
            let metrics = try await TestHTTPClient.request("GET", "\(stack.nodes[0].url)/metrics").text
            let shardsWithCommands = Set(cluster.seeds.filter { metrics.contains(#"herald_redis_commands_total{shard="\#($0)"}"#) })
            #expect(shardsWithCommands.count == 3, "\(metrics.split(separator: "\n").filter { $0.contains("herald_redis") })")
        }
    }

    @Test("a master killed mid-publishing: webhooks get 503 or succeed, and every stream has every delta once, in order")
    func masterKilled() async throws {
        try await withClusterStack { stack, cluster in
            let nodeA = stack.api(node: 0), nodeB = stack.api(node: 1)
            let threads = try await threadsOnEveryMaster(nodeA, cluster)
            var streams: [(SSEStream, SSEStream)] = []
            var runs: [String] = []
            for (thread, _) in threads {
                let pair = (try await nodeA.openStream(thread), try await nodeB.openStream(thread))
                try await pair.0.waitForComment(containing: "connected")
                try await pair.1.waitForComment(containing: "connected")
                runs.append(try await nodeA.send(thread, "[[silent]] through a failover").run)
                _ = try await pair.0.waitForEvents(count: 3)
                _ = try await pair.1.waitForEvents(count: 3)
                streams.append(pair)
            }
            let total = 120
            let publishers = runs.enumerated().map { index, run in
                Self.publishRetrying(index.isMultiple(of: 2) ? nodeA : nodeB, run: run, indexes: 0..<total, interval: .milliseconds(20))
            }
            try await Task.sleep(for: .milliseconds(500))
            let victim = threads[0]
            let slot = cluster.slot(of: "sse:thread:{\(victim.thread)}")
            cluster.killMaster(port: victim.master)
            let promoted = try await cluster.waitForFailover(ofSlot: slot, from: victim.master, timeout: .seconds(30))
            for publisher in publishers { try await publisher.value }

            for ((thread, _), (a, b)) in zip(threads, streams) {
                for stream in [a, b] { try await stream.waitForDelta(total - 1, timeout: .seconds(30)) }
                try await Task.sleep(for: .milliseconds(200))
                for (name, stream) in [("A", a), ("B", b)] {
                    #expect(mismatch(stream.events.compactMap(\.deltaIndex), Array(0..<total)) == nil, "node \(name), thread \(thread)")
                    let ids = stream.events.map(\.lastEventID)
                    #expect(ids == ids.sorted { StreamIDOrder.less($0, $1) }, "ids out of order on node \(name)")
                }
            }
            try await eventually(timeout: .seconds(10), "both nodes are ready again") {
                let a = await nodeA.isReady(), b = await nodeB.isReady()
                return a && b
            }
            let subscribers = try await cluster.command(port: promoted, "PUBSUB", "SHARDNUMSUB", "sse:thread:{\(victim.thread)}")
            #expect(subscribers.split(separator: "\n").last == "2", "the promoted master has both nodes' subscriptions: \(subscribers)")
        }
    }

    @Test("a slot with live threads migrated to another master: streams go on without gaps or duplicates")
    func slotMigrated() async throws {
        try await withClusterStack { stack, cluster in
            let nodeA = stack.api(node: 0), nodeB = stack.api(node: 1)
            let thread = try await nodeA.createThread()
            let slot = cluster.slot(of: "sse:thread:{\(thread)}")
            let source = try await cluster.master(ofSlot: slot).port
            let a = try await nodeA.openStream(thread), b = try await nodeB.openStream(thread)
            try await a.waitForComment(containing: "connected")
            try await b.waitForComment(containing: "connected")
            let run = try await nodeA.send(thread, "[[silent]] through a migration").run
            _ = try await a.waitForEvents(count: 3)

            let total = 150
            let publisher = Self.publishRetrying(nodeB, run: run, indexes: 0..<total, interval: .milliseconds(10))
            try await Task.sleep(for: .milliseconds(400))
            let target = try #require(Set(cluster.seeds.compactMap { Int($0.split(separator: ":").last ?? "") }).subtracting([source]).first)
            try await cluster.migrateSlot(slot, to: target)
            #expect(try await cluster.master(ofSlot: slot).port == target)
            try await publisher.value

            for (name, stream) in [("A", a), ("B", b)] {
                try await stream.waitForDelta(total - 1, timeout: .seconds(30))
                try await Task.sleep(for: .milliseconds(200))
                #expect(mismatch(stream.events.compactMap(\.deltaIndex), Array(0..<total)) == nil, "node \(name)")
                #expect(mismatch(stream.events.map(\.lastEventID), try await logIDs(cluster, thread)) == nil, "node \(name) differs from the log")
            }
            try await eventually(timeout: .seconds(10), "both nodes subscribed on the slot's new master") {
                try await cluster.command(port: target, "PUBSUB", "SHARDNUMSUB", "sse:thread:{\(thread)}").split(separator: "\n").last == "2"
            }
        }
    }
}

extension SSEStream {
    /// Waits until an event matching `predicate` has arrived.
    func waitForEvent(timeout: Duration = .seconds(20), _ predicate: (SSEEvent) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !events.contains(where: predicate) {
            if ContinuousClock.now >= deadline { throw TestHTTPError("no such event within \(timeout); \(events.count) event(s)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Orders SSE ids (`ms-seq`) as Redis stream ids.
enum StreamIDOrder {
    static func less(_ a: String, _ b: String) -> Bool {
        func parts(_ id: String) -> (Int, Int) {
            let pieces = id.split(separator: "-")
            return (Int(pieces.first ?? "") ?? 0, Int(pieces.last ?? "") ?? 0)
        }
        return parts(a) < parts(b)
    }
}
