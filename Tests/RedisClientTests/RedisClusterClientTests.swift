import Foundation
import HeraldTestSupport
import NIOCore
import RedisClient
import Testing

@Suite struct HashSlotTests {
    @Test("slots as Redis computes them (CLUSTER KEYSLOT), hash tags included")
    func slots() {
        // Values from Redis's own documentation and `redis-cli cluster keyslot`.
        #expect(HashSlot.of("123456789") == 12739)
        #expect(HashSlot.of("foo") == 12182)
        #expect(HashSlot.of("somekey") == 11058)
        #expect(HashSlot.of("{user1000}.following") == HashSlot.of("user1000"))
        #expect(HashSlot.of("sse:thread:{abc}") == 7638)
        #expect(HashSlot.of("sse:thread:{abc}:log") == 7638)
        // An empty tag does not count; only the first `{` opens one.
        #expect(HashSlot.of("foo{}{bar}") != HashSlot.of("bar"))
        #expect(HashSlot.of("foo{{bar}}zap") == HashSlot.of("{bar"))
        #expect(HashSlot.of("") == 0)
    }
}

@Suite struct RedisClusterConfigurationTests {
    @Test func clusterURLs() throws {
        let plain = try RedisClusterConfiguration(url: "redis+cluster://10.0.0.1:7001,10.0.0.2:7002,[::1]:7003")
        #expect(plain.seeds == [.init(host: "10.0.0.1", port: 7001), .init(host: "10.0.0.2", port: 7002), .init(host: "::1", port: 7003)])
        #expect(plain.node.tls == nil && plain.node.password == nil)
        #expect(plain.endpointDescription == "redis+cluster://10.0.0.1:7001,10.0.0.2:7002,[::1]:7003")

        let secure = try RedisClusterConfiguration(url: "rediss+cluster://herald:s%40cret@a:7001,b:7002")
        #expect(secure.node.username == "herald" && secure.node.password == "s@cret" && secure.node.tls != nil)
        #expect(secure.configuration(for: .init(host: "c", port: 7005)).password == "s@cret")
        #expect(!secure.endpointDescription.contains("cret"))

        #expect(throws: RedisError.self) { try RedisClusterConfiguration(url: "redis+cluster://a:7001/1") }
        #expect(throws: RedisError.self) { try RedisClusterConfiguration(url: "redis+cluster://") }
        #expect(throws: RedisError.self) { try RedisClusterConfiguration(url: "redis://a:7001") }
        #expect(try RedisClusterConfiguration(nodes: "a:7001,b:7002").seeds.count == 2)

        #expect(try RedisDeployment(url: "redis+cluster://a:7001").isCluster)
        #expect(try !RedisDeployment(url: "redis://a:7001").isCluster)
    }
}

@Suite("cluster client and sharded subscriber on a real 3+3 cluster", .serialized, .timeLimit(.minutes(2)))
struct RedisClusterClientTests {
    /// Redirects seen, by kind.
    final class Redirects: Sendable {
        let seen = Recorder<RedisClientObserver.Redirect>()
        var observer: RedisClientObserver {
            RedisClientObserver(connectionAwaited: { _ in }, commandFailed: { _ in }, redirected: { [seen] in seen.append($0) })
        }
    }

    func client(_ cluster: RedisCluster, redirects: Redirects = Redirects()) throws -> RedisClusterClient {
        let configuration = try RedisClusterConfiguration(nodes: cluster.nodesSetting)
        let topology = ClusterTopology(configuration: configuration, logger: testLogger)
        return RedisClusterClient(configuration: configuration, topology: topology, logger: testLogger, observer: { _ in redirects.observer })
    }

    @Test("keys and scripts go to the master of their slot; ping names every master")
    func routing() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.terminate() }
        let client = try client(cluster)
        for index in 0..<60 {
            _ = try await client.send(["SET", .string("key:\(index)"), .string("\(index)")], key: "key:\(index)")
        }
        for port in cluster.seeds.compactMap({ Int($0.split(separator: ":")[1]) }) {
            #expect(Int(try await cluster.command(port: port, "DBSIZE")) ?? 0 > 0, "master \(port) holds none of the keys")
        }
        for index in 0..<60 {
            #expect(try await client.send(["GET", .string("key:\(index)")], key: "key:\(index)").string == "\(index)")
        }
        let script = RedisScript("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])")
        let reply = try await client.eval(script, keys: ["{t}:a", "{t}:b"], arguments: ["x"])
        #expect(reply.int == 1)
        let health = await client.ping()
        #expect(health.isHealthy && Set(health.servers.keys) == Set(cluster.seeds), "\(health)")
        await client.close()
    }

    @Test("a migrating slot: ASK is followed with ASKING; a migrated one: MOVED is followed and remembered")
    func redirects() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.terminate() }
        let redirects = Redirects()
        let client = try client(cluster, redirects: redirects)
        let key = "moving-key"
        let slot = cluster.slot(of: key)
        _ = try await client.send(["SET", .string(key), "before"], key: key)
        let source = try await cluster.master(ofSlot: slot)
        let masters = cluster.seeds.compactMap { Int($0.split(separator: ":")[1]) }
        let targetPort = try #require(masters.first { $0 != source.port })
        let targetID = try await cluster.command(port: targetPort, "CLUSTER", "MYID")

        // Half-way: the key already lives on the target, the slot still belongs to the source.
        try await cluster.command(port: targetPort, "CLUSTER", "SETSLOT", String(slot), "IMPORTING", source.nodeID)
        try await cluster.command(port: source.port, "CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetID)
        try await cluster.command(port: source.port, "MIGRATE", "127.0.0.1", String(targetPort), key, "0", "5000")
        #expect(try await client.send(["GET", .string(key)], key: key).string == "before")
        #expect(redirects.seen.all == [.ask])

        // Every master learns the new owner before the client asks again, so whichever one a refresh of the
        // layout asks tells the truth: the client still holds the old layout, and meets MOVED once.
        for port in [targetPort, source.port] + masters.filter({ $0 != targetPort && $0 != source.port }) {
            try await cluster.command(port: port, "CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
        }
        #expect(try await client.send(["GET", .string(key)], key: key).string == "before")
        #expect(redirects.seen.all == [.ask, .moved])
        // Remembered: the next command goes straight to the new owner.
        _ = try await client.send(["SET", .string(key), "after"], key: key)
        #expect(redirects.seen.all == [.ask, .moved])
        #expect(try await cluster.command(port: targetPort, "GET", key) == "after")
        await client.close()
    }

    @Test("a subscriber started while a master is dead: connected once the cluster has promoted its replica")
    func startedDuringAnOutage() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.terminate() }
        let channel = "chan:{outage}"
        let slot = cluster.slot(of: channel)
        let dead = try await cluster.master(ofSlot: slot).port
        cluster.killMaster(port: dead)
        let configuration = try RedisClusterConfiguration(nodes: cluster.nodesSetting)
        let topology = ClusterTopology(configuration: configuration, logger: testLogger)
        let client = RedisClusterClient(configuration: configuration, topology: topology, logger: testLogger)
        let recording = RecordingSubscriber(configuration: configuration, topology: topology, name: "outage-sub")
        defer { recording.stop() }
        let (subscriber, messages) = (recording.subscriber, recording.messages)
        // Nothing but the subscriber itself asks the cluster for its layout again.
        _ = try await cluster.waitForFailover(ofSlot: slot, from: dead, timeout: .seconds(30))
        #expect(try await eventually(timeout: .seconds(15)) { subscriber.isConnected })
        try await subscriber.subscribe(channel, timeout: .seconds(5))
        _ = try await client.send(["SPUBLISH", .string(channel), "after"], key: channel)
        #expect(try await eventually { messages.all == ["\(channel)=after"] }, "\(messages.all)")
        await client.close()
    }

    @Test("a cluster that speaks only TLS (rediss+cluster, a private CA): commands on every master and a sharded subscription")
    func overTLS() async throws {
        let certificates = try TestCertificates.make()
        let cluster = try await RedisCluster.start(tls: certificates)
        defer { cluster.terminate() }
        var configuration = try RedisClusterConfiguration(url: "rediss+cluster://" + cluster.nodesSetting)
        configuration.node.tls = RedisConfiguration.TLS(caFile: certificates.authority)
        let topology = ClusterTopology(configuration: configuration, logger: testLogger)
        let client = RedisClusterClient(configuration: configuration, topology: topology, logger: testLogger)
        for index in 0..<30 {
            _ = try await client.send(["SET", .string("tls:\(index)"), "x"], key: "tls:\(index)")
        }
        let health = await client.ping()
        #expect(health.isHealthy && health.servers.count == 3, "\(health)")

        let recording = RecordingSubscriber(configuration: configuration, topology: topology, name: "tls-sub")
        defer { recording.stop() }
        let (subscriber, messages) = (recording.subscriber, recording.messages)
        try await subscriber.subscribe("chan:{tls}", timeout: .seconds(5))
        _ = try await client.send(["SPUBLISH", "chan:{tls}", "secret"], key: "chan:{tls}")
        #expect(try await eventually { messages.all == ["chan:{tls}=secret"] }, "\(messages.all)")

        // Without the CA, the handshake fails: nothing is learnt.
        var untrusted = configuration
        untrusted.node.tls = RedisConfiguration.TLS()
        await #expect(throws: (any Error).self) { try await ClusterTopology(configuration: untrusted, logger: testLogger).refresh() }
        await client.close()
    }

    @Test("sharded subscriptions on every master; a channel whose slot migrates, or whose shard connection drops, is interrupted, then restored")
    func shardedSubscriber() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.terminate() }
        let configuration = try RedisClusterConfiguration(nodes: cluster.nodesSetting)
        let topology = ClusterTopology(configuration: configuration, logger: testLogger)
        let client = RedisClusterClient(configuration: configuration, topology: topology, logger: testLogger)
        let recording = RecordingSubscriber(configuration: configuration, topology: topology, name: "test-sub")
        defer { recording.stop() }
        let (subscriber, messages, events) = (recording.subscriber, recording.messages, recording.events)
        // Channels until every master serves one.
        var channels: [String] = []
        var masters: Set<Int> = []
        var index = 0
        while masters.count < 3 {
            let channel = "chan:{\(index)}"
            let master = try await cluster.master(ofSlot: cluster.slot(of: channel)).port
            if masters.insert(master).inserted { channels.append(channel) }
            index += 1
        }
        for channel in channels { try await subscriber.subscribe(channel, timeout: .seconds(5)) }
        #expect(try await eventually { subscriber.isConnected })
        #expect(events.all.first == .connected)
        for channel in channels {
            _ = try await client.send(["SPUBLISH", .string(channel), "one"], key: channel)
        }
        #expect(try await eventually { Set(messages.all) == Set(channels.map { "\($0)=one" }) }, "\(messages.all)")

        let moving = channels[0]
        let slot = cluster.slot(of: moving)
        let source = try await cluster.master(ofSlot: slot).port
        let target = try #require(cluster.seeds.compactMap { Int($0.split(separator: ":")[1]) }.first { $0 != source })
        try await cluster.migrateSlot(slot, to: target)
        #expect(try await eventually(timeout: .seconds(10)) { events.all.contains(.restored([moving])) }, "\(events.all)")
        let interrupted = try #require(events.all.firstIndex(of: .interrupted([moving])), "\(events.all)")
        #expect(interrupted < events.all.firstIndex(of: .restored([moving]))!)
        #expect(try await cluster.command(port: target, "PUBSUB", "SHARDNUMSUB", moving).split(separator: "\n").last == "1")
        _ = try await client.send(["SPUBLISH", .string(moving), "two"], key: moving)
        #expect(try await eventually { messages.all.contains("\(moving)=two") }, "\(messages.all)")
        #expect(subscriber.isConnected)

        try await subscriber.unsubscribe(moving)
        #expect(try await cluster.command(port: target, "PUBSUB", "SHARDNUMSUB", moving).split(separator: "\n").last == "0")

        // One shard's subscriber connection killed: only its channel is interrupted, and restored on the same
        // master once the connection is back.
        let kept = channels[1]
        let keptMaster = try await cluster.master(ofSlot: cluster.slot(of: kept)).port
        let eventsBefore = events.all.count
        #expect(try await cluster.command(port: keptMaster, "CLIENT", "KILL", "TYPE", "pubsub") == "1")
        #expect(try await eventually(timeout: .seconds(10)) { events.all.dropFirst(eventsBefore).contains(.restored([kept])) }, "\(events.all)")
        #expect(Array(events.all.dropFirst(eventsBefore)) == [.interrupted([kept]), .restored([kept])])
        _ = try await client.send(["SPUBLISH", .string(kept), "three"], key: kept)
        #expect(try await eventually { messages.all.contains("\(kept)=three") }, "\(messages.all)")
        #expect(subscriber.isConnected)
        await client.close()
    }
}

/// A running cluster subscriber that records every message (`channel=payload`) and event it reports.
final class RecordingSubscriber: Sendable {
    let subscriber: RedisClusterSubscriber
    let messages = Recorder<String>()
    let events = Recorder<PubSubEvent>()
    private let running: Task<Void, any Error>

    init(configuration: RedisClusterConfiguration, topology: ClusterTopology, name: String) {
        let (messages, events) = (self.messages, self.events)
        let subscriber = RedisClusterSubscriber(
            configuration: configuration, topology: topology, name: name, logger: testLogger,
            onMessage: { channel, payload in messages.append("\(channel)=\(String(buffer: payload))") },
            onEvent: { events.append($0) }
        )
        self.subscriber = subscriber
        running = Task { try await subscriber.run() }
    }

    func stop() {
        subscriber.shutdown()
        running.cancel()
    }
}
