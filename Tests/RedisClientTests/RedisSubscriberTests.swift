import HeraldTestSupport
import NIOCore
import RedisClient
import Testing

/// A subscriber with its run() task and recorded callbacks.
private struct Harness {
    let subscriber: RedisSubscriber
    let messages = Recorder<(channel: String, payload: ByteBuffer)>()
    let events = Recorder<RedisSubscriber.Event>()
    let runner: Task<Void, any Error>

    init(port: Int, name: String = "herald-subscriber") {
        let messages = self.messages
        let events = self.events
        let subscriber = RedisSubscriber(
            configuration: RedisConfiguration(port: port),
            name: name,
            logger: testLogger,
            onMessage: { channel, payload in messages.append((channel, payload)) },
            onEvent: { event in events.append(event) }
        )
        self.subscriber = subscriber
        self.runner = Task { try await subscriber.run() }
    }

    func payloads(on channel: String) -> [String] {
        self.messages.all.filter { $0.channel == channel }.map { String(buffer: $0.payload) }
    }

    func stop() async throws {
        self.subscriber.shutdown()
        try await self.runner.value
        #expect(!self.subscriber.isConnected)
    }
}

@Suite(.timeLimit(.minutes(2))) struct RedisSubscriberTests {
    @Test func receivesMessagesUntilUnsubscribed() async throws {
        let server = try await RedisServer.start()
        let client = RedisClient(configuration: RedisConfiguration(port: server.port), logger: testLogger)
        let harness = Harness(port: server.port)

        try await harness.subscriber.subscribe("news")
        try await harness.subscriber.subscribe("sport")
        #expect(try await eventually { harness.subscriber.isConnected })
        #expect(try await server.command("PUBSUB", "NUMSUB", "news", "sport") == "news\n1\nsport\n1")

        var frame = ByteBuffer(string: "id: 1-0\nevent: delta\ndata: {}\n\n")
        frame.writeBytes([0, 255, 13, 10])
        #expect(try await client.send("PUBLISH", "news", .bytes(frame)) == .integer(1))
        #expect(try await eventually { harness.messages.all.count == 1 })
        #expect(harness.messages.all.first?.channel == "news")
        #expect(harness.messages.all.first?.payload == frame)

        try await harness.subscriber.unsubscribe("news")
        #expect(try await server.command("PUBSUB", "NUMSUB", "news") == "news\n0")
        #expect(try await client.send("PUBLISH", "news", "dropped") == .integer(0))
        #expect(try await client.send("PUBLISH", "sport", "goal") == .integer(1))
        #expect(try await eventually { harness.payloads(on: "sport") == ["goal"] })
        #expect(harness.messages.all.count == 2)

        // Unsubscribing twice or an unknown channel is harmless; re-subscribing works.
        try await harness.subscriber.unsubscribe("news")
        try await harness.subscriber.unsubscribe("never-subscribed")
        try await harness.subscriber.subscribe("news")
        #expect(try await client.send("PUBLISH", "news", "again") == .integer(1))
        #expect(try await eventually { harness.payloads(on: "news").count == 2 })

        #expect(harness.events.all == [.connected])
        try await harness.stop()
        await #expect(throws: RedisError.notConnected) { try await harness.subscriber.subscribe("late") }
        await client.close()
    }

    @Test func subscribeWithoutConnectionThrowsNotConnected() async throws {
        let closed = RefusingPort()
        defer { withExtendedLifetime(closed) {} }
        let subscriber = RedisSubscriber(
            configuration: RedisConfiguration(port: closed.port),
            name: "nobody",
            logger: testLogger,
            onMessage: { _, _ in }
        )
        let runner = Task { try await subscriber.run() }
        // Each call's own timeout is honoured: a 200 ms one asked after a 3 s one gives up first. (Told apart by
        // order, not by the clock: a loaded machine can stall the loop longer than either; with one timeout for all,
        // the first asked would give up first.)
        let givenUp = GivingUpOrder()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (channel, timeout) in [("long", Duration.seconds(3)), ("short", .milliseconds(200))] {
                group.addTask {
                    await #expect(throws: RedisError.notConnected) {
                        try await subscriber.subscribe(channel, timeout: timeout)
                    }
                    await givenUp.record(channel)
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            try await group.waitForAll()
        }
        #expect(await givenUp.channels == ["short", "long"])
        #expect(!subscriber.isConnected)
        // Cancelling run() ends the subscriber like shutdown().
        runner.cancel()
        try await runner.value
        await #expect(throws: RedisError.notConnected) { try await subscriber.subscribe("x") }
    }

    @Test func reconnectsAndResubscribesAfterClientKill() async throws {
        let server = try await RedisServer.start()
        let client = RedisClient(configuration: RedisConfiguration(port: server.port), logger: testLogger)
        let harness = Harness(port: server.port, name: "herald-killed")
        try await harness.subscriber.subscribe("a")
        try await harness.subscriber.subscribe("b")
        // Many concurrent subscribes, each confirmed on its own.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<1500 {
                group.addTask { try await harness.subscriber.subscribe("bulk:\(i)") }
            }
            try await group.waitForAll()
        }
        #expect(try await client.send("PUBSUB", "CHANNELS", "bulk:*").array?.count == 1500)
        #expect(try await eventually { harness.events.all == [.connected] })

        #expect(try await server.command("CLIENT", "KILL", "TYPE", "pubsub") == "1")
        #expect(try await eventually { harness.events.all == [.connected, .disconnected, .reconnected] })
        #expect(harness.subscriber.isConnected)
        // .reconnected comes after every channel was re-subscribed, on a connection that has its name again.
        #expect(try await server.command("PUBSUB", "NUMSUB", "a", "b") == "a\n1\nb\n1")
        #expect(try await client.send("PUBSUB", "CHANNELS", "bulk:*").array?.count == 1500)
        let clients = try await server.command("CLIENT", "LIST")
        #expect(clients.split(separator: "\n").filter { $0.contains("name=herald-killed") }.count == 1)

        #expect(try await client.send("PUBLISH", "a", "one") == .integer(1))
        #expect(try await client.send("PUBLISH", "b", "two") == .integer(1))
        #expect(try await eventually { harness.payloads(on: "a") == ["one"] && harness.payloads(on: "b") == ["two"] })

        try await harness.stop()
        await client.close()
    }

    @Test func survivesServerRestart() async throws {
        let server = try await RedisServer.start()
        let client = RedisClient(configuration: RedisConfiguration(port: server.port), logger: testLogger)
        let harness = Harness(port: server.port)
        try await harness.subscriber.subscribe("thread:1")
        #expect(try await eventually { harness.subscriber.isConnected })

        try await server.restart()
        #expect(try await eventually { harness.events.all == [.connected, .disconnected, .reconnected] })
        #expect(try await server.command("PUBSUB", "NUMSUB", "thread:1") == "thread:1\n1")
        _ = try? await client.send("PING")  // may fail once: the old connection died with the server
        #expect(try await client.send("PUBLISH", "thread:1", "after restart") == .integer(1))
        #expect(try await eventually { harness.payloads(on: "thread:1") == ["after restart"] })

        // A subscribe made while Redis is down completes once the subscriber is back.
        try await server.stop()
        #expect(try await eventually { !harness.subscriber.isConnected })
        let late = Task { try await harness.subscriber.subscribe("thread:2", timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(100))
        try await server.restart()
        try await late.value
        #expect(try await eventually { harness.subscriber.isConnected })
        #expect(try await server.command("PUBSUB", "NUMSUB", "thread:1", "thread:2") == "thread:1\n1\nthread:2\n1")
        _ = try? await client.send("PING")
        #expect(try await client.send("PUBLISH", "thread:2", "late") == .integer(1))
        #expect(try await eventually { harness.payloads(on: "thread:2") == ["late"] })
        #expect(harness.events.all == [.connected, .disconnected, .reconnected, .disconnected, .reconnected])

        try await harness.stop()
        await client.close()
    }

    @Test("a restart that takes seconds to load its data: refused while Redis loads, subscribed again once loaded")
    func reconnectsAfterRedisLoadsItsData() async throws {
        let server = try await RedisServer.start(persistence: true)
        let client = RedisClient(configuration: RedisConfiguration(port: server.port), logger: testLogger)
        let harness = Harness(port: server.port)
        try await harness.subscriber.subscribe("thread:1")
        #expect(try await eventually { harness.subscriber.isConnected })
        _ = try await client.send("EVAL", "for i = 1, 1000 do redis.call('SET', 'key:' .. i, 'value') end", "0")
        // Rewritten as an RDB snapshot, whose loading answers clients every `loading-process-events-interval-bytes`
        // (an append-only file's, every 1 024 commands).
        _ = try await client.send("BGREWRITEAOF")
        #expect(try await eventually {
            let info = try await server.command("INFO", "persistence")
            return info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
        })

        // Loading 1 000 keys at 2 ms each (a sleep, so a busy machine does not stretch it much), answering clients
        // every KiB read: over two seconds of "-LOADING" replies to the PING that marks a new subscriber connection
        // ready, which the subscriber's reconnects (at most 2 s apart) meet.
        try await server.restart(arguments: ["--key-load-delay", "2000", "--loading-process-events-interval-bytes", "1024"])
        #expect(try await eventually(timeout: .seconds(10)) { harness.events.all == [.connected, .disconnected, .reconnected] })
        let subscribers = try await server.command("PUBSUB", "NUMSUB", "thread:1")
        let clients = try await server.command("CLIENT", "LIST")
        #expect(subscribers == "thread:1\n1", "\(harness.events.all), \(clients)")
        _ = try? await client.send("PING")  // may fail once: the old connection died with the server
        #expect(try await client.send("DBSIZE") == .integer(1000))
        #expect(try await client.send("PUBLISH", "thread:1", "loaded") == .integer(1), "\(harness.events.all)")
        #expect(try await eventually { harness.payloads(on: "thread:1") == ["loaded"] })

        try await harness.stop()
        await client.close()
    }
}

/// The order in which subscribe calls gave up.
private actor GivingUpOrder {
    private(set) var channels: [String] = []

    func record(_ channel: String) {
        channels.append(channel)
    }
}
