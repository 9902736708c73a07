import HeraldTestSupport
import Logging
import PostgresClient
import Synchronization
import Testing

@Suite("PostgresPool reports lease waits and failed calls to its observer", .timeLimit(.minutes(2)))
struct PostgresPoolObserverTests {
    final class Reports: Sendable {
        let waits = Mutex<[Duration]>([])
        let failures = Mutex<[PostgresError.Kind]>([])

        var observer: PostgresPoolObserver {
            PostgresPoolObserver(
                leaseAcquired: { waited in self.waits.withLock { $0.append(waited) } },
                callFailed: { error in self.failures.withLock { $0.append(error.kind) } }
            )
        }
    }

    @Test("every call reports its wait; a caller queued behind a busy connection waits; server and pool failures")
    func reports() async throws {
        let reports = Reports()
        let url = try await PostgresServer.shared().createDatabase()
        let pool = PostgresPool(
            configuration: PostgresConfiguration(connectionString: url, poolSize: 1), logger: Logger(label: "test"), observer: reports.observer
        )
        _ = try await pool.query("SELECT 1")
        // One connection, two statements of 200 ms: whichever runs second waited for the other.
        async let first = pool.query("SELECT pg_sleep(0.2)")
        async let second = pool.query("SELECT pg_sleep(0.2)")
        _ = try await (first, second)
        await #expect(throws: PostgresError.self) { try await pool.query("SELECT * FROM no_such_table") }
        await pool.shutdown()
        await #expect(throws: PostgresError.self) { try await pool.query("SELECT 1") }

        let waits = reports.waits.withLock { $0 }
        #expect(waits.count == 4, "\(waits)")
        #expect(waits.contains { $0 >= .milliseconds(100) }, "the queued call waited: \(waits)")
        #expect(reports.failures.withLock { $0 } == [.server, .connection])
    }
}
