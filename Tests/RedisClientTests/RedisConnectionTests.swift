import HeraldTestSupport
import NIOCore
import RedisClient
import Testing

@Suite(.timeLimit(.minutes(2))) struct RedisConnectionTests {
    @Test func binaryRoundTrip() async throws {
        let server = try await RedisServer.start()
        let connection = try await RedisConnection.connect(
            configuration: RedisConfiguration(url: server.url),
            logger: testLogger
        )

        var value = ByteBuffer()
        value.writeBytes(Array(0...255) as [UInt8])
        value.writeString("\r\n$-1\r\n*3\r\n")
        value.writeBytes((0..<(1 << 20)).map { _ in UInt8.random(in: 0...255) })
        let key = ByteBuffer(bytes: [0, 13, 10, 255, 36])

        #expect(try await connection.send("SET", .bytes(key), .bytes(value)) == .simpleString("OK"))
        #expect(try await connection.send("GET", .bytes(key)) == .bulkString(value))
        #expect(try await connection.send("STRLEN", .bytes(key)) == .integer(value.readableBytes))
        #expect(try await connection.send("GET", "missing") == .null)
        #expect(try await connection.send("SET", "empty", "") == .simpleString("OK"))
        #expect(try await connection.send("GET", "empty") == .bulkString(ByteBuffer()))

        _ = try await connection.send("RPUSH", "list", "a", "", "ü")
        let list = try await connection.send("LRANGE", "list", "0", "-1")
        #expect(list.array?.compactMap(\.string) == ["a", "", "ü"])
        #expect(try await connection.send("LLEN", "list").int == 3)

        await connection.close()
        #expect(!connection.isActive)
        await #expect(throws: RedisError.notConnected) { try await connection.send("PING") }
    }

    @Test func pipelinesConcurrentSendsAndMatchesReplies() async throws {
        let server = try await RedisServer.start()
        let connection = try await RedisConnection.connect(
            configuration: RedisConfiguration(port: server.port),
            logger: testLogger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<500 {
                group.addTask {
                    let set = try await connection.send("SET", "key:\(i)", "value-\(i)")
                    let get = try await connection.send("GET", "key:\(i)")
                    let echo = try await connection.send("ECHO", "\(i)")
                    #expect(set == .simpleString("OK"))
                    #expect(get.string == "value-\(i)")
                    #expect(echo.string == "\(i)")
                }
            }
            try await group.waitForAll()
        }
        #expect(try await connection.send("DBSIZE") == .integer(500))
        await connection.close()
    }

    @Test func errorRepliesThrowAndConnectionStaysUsable() async throws {
        let server = try await RedisServer.start()
        let connection = try await RedisConnection.connect(
            configuration: RedisConfiguration(port: server.port),
            logger: testLogger
        )

        let unknown = await #expect(throws: RedisError.self) { try await connection.send("NOPE", "x") }
        guard case .server(let message)? = unknown else {
            Issue.record("expected a server error, got \(String(describing: unknown))")
            return
        }
        #expect(message.hasPrefix("ERR unknown command"))

        _ = try await connection.send("SET", "s", "text")
        let wrongType = await #expect(throws: RedisError.self) { try await connection.send("LPUSH", "s", "x") }
        #expect(wrongType.map { "\($0)" }?.contains("WRONGTYPE") == true)

        // Error replies nested in EXEC come back as values.
        #expect(try await connection.send("MULTI") == .simpleString("OK"))
        #expect(try await connection.send("SET", "n", "1") == .simpleString("QUEUED"))
        #expect(try await connection.send("LPUSH", "n", "x") == .simpleString("QUEUED"))
        let exec = try await connection.send("EXEC")
        #expect(exec.array?.count == 2)
        #expect(exec.array?.first == .simpleString("OK"))
        if case .error(let nested)? = exec.array?.last {
            #expect(nested.hasPrefix("WRONGTYPE"))
        } else {
            Issue.record("expected a nested error, got \(exec)")
        }

        #expect(try await connection.send("PING") == .simpleString("PONG"))
        await connection.close()
    }

    @Test func handshakeAuthenticatesSelectsAndNames() async throws {
        let server = try await RedisServer.start()
        try await server.command("ACL", "SETUSER", "alice", "on", ">wonderland", "~*", "&*", "+@all")
        try await server.command("CONFIG", "SET", "requirepass", "s3cret")

        let named = try await RedisConnection.connect(
            configuration: RedisConfiguration(url: "redis://:s3cret@127.0.0.1:\(server.port)/2"),
            name: "herald-handshake",
            logger: testLogger
        )
        #expect(try await named.send("SET", "k", "v") == .simpleString("OK"))
        let me = try await named.send("CLIENT", "INFO").string ?? ""
        #expect(me.contains("name=herald-handshake"))
        #expect(me.contains("db=2"))

        let alice = try await RedisConnection.connect(
            configuration: RedisConfiguration(port: server.port, username: "alice", password: "wonderland"),
            logger: testLogger
        )
        #expect(try await alice.send("ACL", "WHOAMI").string == "alice")
        #expect(try await alice.send("GET", "k") == .null)
        _ = try await alice.send("SELECT", "2")
        #expect(try await alice.send("GET", "k").string == "v")

        let wrong = await #expect(throws: RedisError.self) {
            try await RedisConnection.connect(
                configuration: RedisConfiguration(port: server.port, password: "wrong"),
                logger: testLogger
            )
        }
        #expect(wrong.map { "\($0)" }?.contains("WRONGPASS") == true)

        let anonymous = try await RedisConnection.connect(
            configuration: RedisConfiguration(port: server.port),
            logger: testLogger
        )
        let noAuth = await #expect(throws: RedisError.self) { try await anonymous.send("GET", "k") }
        #expect(noAuth.map { "\($0)" }?.contains("NOAUTH") == true)

        await named.close()
        await alice.close()
        await anonymous.close()
    }

    @Test func connectToClosedPortFails() async throws {
        let port = freeTCPPort()
        await #expect(throws: RedisError.notConnected) {
            try await RedisConnection.connect(configuration: RedisConfiguration(port: port), logger: testLogger)
        }
    }
}
