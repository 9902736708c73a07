import HeraldTestSupport
import NIOCore
import RedisClient
import Testing

@Suite(.timeLimit(.minutes(2))) struct RedisClientTests {
    @Test func sharesOnePipelinedConnection() async throws {
        let server = try await RedisServer.start()
        let client = RedisClient(
            configuration: RedisConfiguration(port: server.port),
            name: "herald-shared",
            logger: testLogger
        )
        let values = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<300 {
                group.addTask { try await client.send("INCR", "counter").int ?? -1 }
            }
            var values: [Int] = []
            for try await value in group { values.append(value) }
            return values
        }
        #expect(values.sorted() == Array(1...300))
        let clients = try await server.command("CLIENT", "LIST")
        #expect(clients.split(separator: "\n").filter { $0.contains("name=herald-shared") }.count == 1)
        await client.close()
        await #expect(throws: RedisError.notConnected) { try await client.send("PING") }
    }

    @Test func evalUsesEvalshaAndFallsBackOnNoscript() async throws {
        let server = try await RedisServer.start()
        let client = RedisClient(configuration: RedisConfiguration(port: server.port), logger: testLogger)
        let script = RedisScript(
            "redis.call('SET', KEYS[1], ARGV[1]); return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[2])}"
        )
        func evalCalls() async throws -> Int {
            let stats = try await client.send("INFO", "commandstats").string ?? ""
            guard let line = stats.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("cmdstat_eval:") })
            else { return 0 }
            return Int(line.dropFirst("cmdstat_eval:calls=".count).prefix(while: \.isNumber)) ?? -1
        }

        #expect(try await client.send("SCRIPT", "EXISTS", .string(script.sha1)) == .array([.integer(0)]))
        let payload = ByteBuffer(bytes: [0, 255, 13, 10])
        let first = try await client.eval(script, keys: ["k", "n"], arguments: [.bytes(payload)])
        #expect(first == .array([.bulkString(ByteBuffer(string: "k")), .bulkString(payload), .integer(1)]))
        #expect(try await evalCalls() == 1)
        #expect(try await client.send("SCRIPT", "EXISTS", .string(script.sha1)) == .array([.integer(1)]))

        // Loaded now: EVALSHA alone, no further EVAL.
        #expect(try await client.eval(script, keys: ["k", "n"], arguments: ["x"]).array?.last == .integer(2))
        #expect(try await evalCalls() == 1)

        // After SCRIPT FLUSH, NOSCRIPT makes it fall back to EVAL once more.
        #expect(try await client.send("SCRIPT", "FLUSH") == .simpleString("OK"))
        #expect(try await client.eval(script, keys: ["k", "n"], arguments: ["y"]).array?.last == .integer(3))
        #expect(try await evalCalls() == 2)
        #expect(try await client.send("GET", "k").string == "y")

        // Our SHA-1 is Redis's.
        #expect(try await client.send("SCRIPT", "LOAD", .string(script.source)).string == script.sha1)

        // A script error is a server error, not a NOSCRIPT retry.
        let failing = RedisScript("return redis.error_reply('BOOM nope')")
        await #expect(throws: RedisError.server("BOOM nope")) {
            try await client.eval(failing, keys: [], arguments: [])
        }
        await client.close()
    }

    @Test func inFlightCommandFailsWhenConnectionDiesAndNextCallReconnects() async throws {
        let server = try await RedisServer.start()
        let client = RedisClient(
            configuration: RedisConfiguration(port: server.port),
            name: "herald-victim",
            logger: testLogger
        )
        #expect(try await client.send("PING") == .simpleString("PONG"))
        let blocked = Task { try await client.send("BLPOP", "never", "0") }
        #expect(try await eventually { try await server.command("CLIENT", "LIST").contains("cmd=blpop") })
        #expect(try await server.command("CLIENT", "KILL", "TYPE", "normal") == "1")
        await #expect(throws: RedisError.connectionClosed) { try await blocked.value }
        #expect(try await client.send("PING") == .simpleString("PONG"))
        await client.close()
    }

    @Test func recoversOnTheNextCallAfterRestart() async throws {
        let server = try await RedisServer.start(persistence: true)
        let client = RedisClient(configuration: try RedisConfiguration(url: server.url), logger: testLogger)
        #expect(try await client.send("SET", "survivor", "still here") == .simpleString("OK"))

        try await server.restart()

        // The old connection is dead; at most one call may fail, and the one after that reconnects.
        do {
            _ = try await client.send("PING")
        } catch let error as RedisError {
            #expect(error == .connectionClosed || error == .notConnected)
        }
        #expect(try await client.send("GET", "survivor").string == "still here")
        await client.close()
    }
}
