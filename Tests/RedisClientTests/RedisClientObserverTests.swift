import HeraldTestSupport
import RedisClient
import Synchronization
import Testing

@Suite("RedisClient reports connection waits and failed commands to its observer", .timeLimit(.minutes(2)))
struct RedisClientObserverTests {
    final class Reports: Sendable {
        let waits = Mutex<Int>(0)
        let failures = Mutex<[String]>([])

        var observer: RedisClientObserver {
            RedisClientObserver(
                connectionAwaited: { _ in self.waits.withLock { $0 += 1 } },
                commandFailed: { error in self.failures.withLock { $0.append(String(describing: error)) } }
            )
        }
    }

    @Test("the connecting command waits; error replies and a lost server are failures; NOSCRIPT is not")
    func reports() async throws {
        let server = try await RedisServer.start()
        let reports = Reports()
        let client = RedisClient(configuration: RedisConfiguration(port: server.port), logger: testLogger, observer: reports.observer)
        _ = try await client.send("PING")
        _ = try await client.send("PING")
        #expect(reports.waits.withLock { $0 } == 1, "only the first command waited for the connection")
        // A script Redis has not seen: EVALSHA answers NOSCRIPT, EVAL succeeds.
        _ = try await client.eval(RedisScript("return 1"), keys: [], arguments: [])
        #expect(reports.failures.withLock { $0 }.isEmpty)
        await #expect(throws: RedisError.self) { try await client.send("NO-SUCH-COMMAND") }
        try await server.stop()
        await #expect(throws: RedisError.self) { try await client.send("PING") }
        let failures = reports.failures.withLock { $0 }
        #expect(failures.count == 2, "\(failures)")
        #expect(failures.first?.contains("NO-SUCH-COMMAND") == true || failures.first?.lowercased().contains("unknown command") == true, "\(failures)")
        await client.close()
    }
}
