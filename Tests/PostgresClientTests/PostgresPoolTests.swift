import HeraldTestSupport
import Logging
import PostgresClient
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private struct BodyFailed: Error {}

/// A pool on a fresh database of the shared server; shut down after `body`.
private func withPool<T>(
    size: Int = 4,
    _ body: (PostgresPool, String) async throws -> T
) async throws -> T {
    let url = try await PostgresServer.shared().createDatabase()
    let pool = PostgresPool(
        configuration: PostgresConfiguration(connectionString: url, poolSize: size),
        logger: Logger(label: "test.postgres")
    )
    do {
        let result = try await body(pool, url)
        await pool.shutdown()
        return result
    } catch {
        await pool.shutdown()
        throw error
    }
}

/// The error `body` throws, as a `PostgresError`.
private func postgresError(_ body: () async throws -> Void) async -> PostgresError? {
    do {
        try await body()
        return nil
    } catch let error as PostgresError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

@Suite(.timeLimit(.minutes(2))) struct PostgresPoolTests {
    @Test func parametersAreDataAndResultsAreText() async throws {
        try await withPool { pool, _ in
            let hostile = "'); DROP TABLE notes; -- \\ $1 \" ;"
            let unicode = "héllo wörld 🌍 日本"
            let result = try await pool.query(
                "SELECT $1::text AS a, $2::text AS b, $3::int + 1 AS c, $4::text AS d, $5::uuid AS e, true AS f",
                [hostile, nil, "41", unicode, "6F9619FF-8B86-D011-B42D-00CF4FC964FF"]
            )
            #expect(result.columns == ["a", "b", "c", "d", "e", "f"])
            #expect(result.rows.count == 1)
            let row = try #require(result.rows.first)
            #expect(row["a"] == hostile)
            #expect(row["b"] == nil)
            #expect(row["c"] == "42")
            #expect(row[3] == unicode)
            #expect(row["e"] == "6f9619ff-8b86-d011-b42d-00cf4fc964ff")
            #expect(row["f"] == "t")
            #expect(row["missing"] == nil)
            #expect(row[99] == nil)

            try await pool.execute(script: "CREATE TABLE notes (id serial PRIMARY KEY, body text);")
            _ = try await pool.query("INSERT INTO notes (body) VALUES ($1)", [hostile])
            let stored = try await pool.query("SELECT body FROM notes WHERE body = $1", [hostile])
            #expect(stored.rows.map { $0["body"] } == [hostile])
        }
    }

    @Test func affectedRows() async throws {
        try await withPool { pool, _ in
            try await pool.execute(
                script: """
                    CREATE TABLE items (id int PRIMARY KEY, flag boolean NOT NULL DEFAULT false);
                    CREATE INDEX items_flag ON items (flag);
                    """
            )
            let inserted = try await pool.query(
                "INSERT INTO items (id) SELECT generate_series(1, $1::int)",
                ["5"]
            )
            #expect(inserted.affectedRows == 5)
            #expect(inserted.rows.isEmpty)
            let updated = try await pool.query("UPDATE items SET flag = true WHERE id <= $1::int", ["2"])
            #expect(updated.affectedRows == 2)
            let deleted = try await pool.query("DELETE FROM items WHERE flag")
            #expect(deleted.affectedRows == 2)
            let selected = try await pool.query("SELECT id FROM items ORDER BY id")
            #expect(selected.rows.map { $0["id"] } == ["3", "4", "5"])
            #expect(selected.affectedRows == 3)
            let none = try await pool.query("UPDATE items SET flag = true WHERE id = $1::int", ["99"])
            #expect(none.affectedRows == 0)
        }
    }

    @Test func serverErrorsCarrySQLState() async throws {
        try await withPool(size: 1) { pool, _ in
            try await pool.execute(script: "CREATE TABLE users (email text PRIMARY KEY);")
            _ = try await pool.query("INSERT INTO users VALUES ($1)", ["a@example.com"])

            let duplicate = await postgresError {
                _ = try await pool.query("INSERT INTO users VALUES ($1)", ["a@example.com"])
            }
            #expect(duplicate?.sqlState == "23505")
            #expect(duplicate?.kind == .server)
            #expect(duplicate?.isConnectionError == false)
            #expect(duplicate?.message.contains("users_pkey") == true)

            let syntax = await postgresError { _ = try await pool.query("SELEC 1") }
            #expect(syntax?.sqlState == "42601")

            let badUUID = await postgresError { _ = try await pool.query("SELECT $1::uuid", ["nope"]) }
            #expect(badUUID?.sqlState == "22P02")

            // Two statements need execute(script:); PQexecParams refuses them.
            let twoStatements = await postgresError { _ = try await pool.query("SELECT 1; SELECT 2") }
            #expect(twoStatements?.sqlState == "42601")

            // The single connection is still fine.
            let count = try await pool.query("SELECT count(*) AS n FROM users")
            #expect(count.rows.first?["n"] == "1")
        }
    }

    @Test func transactionCommitsAndRollsBack() async throws {
        try await withPool(size: 2) { pool, _ in
            try await pool.execute(script: "CREATE TABLE ledger (id int PRIMARY KEY, amount int NOT NULL);")

            let total = try await pool.transaction { connection in
                _ = try connection.query("INSERT INTO ledger VALUES (1, $1::int)", ["10"])
                _ = try connection.query("INSERT INTO ledger VALUES (2, $1::int)", ["20"])
                return try connection.query("SELECT sum(amount) AS total FROM ledger").rows[0]["total"]
            }
            #expect(total == "30")

            await #expect(throws: BodyFailed.self) {
                try await pool.transaction { connection in
                    _ = try connection.query("INSERT INTO ledger VALUES (3, 30)")
                    throw BodyFailed()
                }
            }

            // A failed statement caught inside the body still aborts the transaction: no COMMIT.
            let aborted = await postgresError {
                try await pool.transaction { connection in
                    _ = try connection.query("INSERT INTO ledger VALUES (4, 40)")
                    _ = try? connection.query("INSERT INTO ledger VALUES (1, 0)")
                }
            }
            #expect(aborted?.sqlState == "25P02")

            let ids = try await pool.query("SELECT id FROM ledger ORDER BY id").rows.map { $0["id"] }
            #expect(ids == ["1", "2"])

            // A BEGIN left open by a plain query is rolled back when the connection returns to the pool.
            _ = try await pool.query("BEGIN")
            let state = try await pool.query("SELECT count(*) AS n FROM ledger")
            #expect(state.rows.first?["n"] == "2")
        }
    }

    @Test func manyConcurrentQueriesShareASmallPool() async throws {
        try await withPool(size: 3) { pool, _ in
            let values = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for index in 0..<60 {
                    group.addTask {
                        let result = try await pool.query(
                            "SELECT $1::int * 2 AS doubled, pg_sleep(0.01)",
                            [String(index)]
                        )
                        return (index, result.rows.first?["doubled"])
                    }
                }
                var values: [Int: String?] = [:]
                for try await (index, doubled) in group { values[index] = doubled }
                return values
            }
            #expect(values.count == 60)
            #expect(values.allSatisfy { $0.value == String($0.key * 2) })

            let backends = try await pool.query(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            )
            #expect(Int(backends.rows.first?["n"] ?? "") ?? 0 <= 3)
        }
    }

    @Test func cancelledWaiterLeavesTheQueue() async throws {
        try await withPool(size: 1) { pool, _ in
            let busy = Task { try await pool.query("SELECT pg_sleep(10)") }
            try await Task.sleep(for: .milliseconds(100))
            let waiter = Task { try await pool.query("SELECT 1") }
            try await Task.sleep(for: .milliseconds(50))
            let start = ContinuousClock.now
            waiter.cancel()
            let error = await postgresError { _ = try await waiter.value }
            #expect(error?.kind == .cancelled)
            // Well before the busy query (10 s) frees the only connection.
            #expect(ContinuousClock.now - start < .seconds(8))
            _ = try await busy.value
            let after = try await pool.query("SELECT 2 AS two")
            #expect(after.rows.first?["two"] == "2")
        }
    }

    @Test func killedConnectionIsReplaced() async throws {
        try await withPool(size: 1) { pool, url in
            let killer = PostgresPool(
                configuration: PostgresConfiguration(connectionString: url, poolSize: 1),
                logger: Logger(label: "test.killer")
            )

            // Killed while idle in the pool: noticed before use, the query runs on a new connection.
            let first = try await pool.query("SELECT pg_backend_pid() AS pid").rows[0]["pid"]
            let killed = try await killer.query("SELECT pg_terminate_backend($1::int, 5000) AS ok", [first])
            #expect(killed.rows.first?["ok"] == "t")
            let second = try await pool.query("SELECT pg_backend_pid() AS pid").rows[0]["pid"]
            #expect(second != nil && second != first)

            // Killed during a statement: that statement fails with a connection error; the next one works.
            let error = await postgresError {
                _ = try await pool.query("SELECT pg_terminate_backend(pg_backend_pid())")
            }
            #expect(error?.isConnectionError == true)
            #expect(error?.kind == .connection)
            let third = try await pool.query("SELECT pg_backend_pid() AS pid").rows[0]["pid"]
            #expect(third != nil && third != second)
            await killer.shutdown()
        }
    }

    @Test func stoppedServerGivesConnectionErrors() async throws {
        let server = try await PostgresServer.start()
        let url = try await server.createDatabase()
        let pool = PostgresPool(
            configuration: PostgresConfiguration(connectionString: url, poolSize: 2),
            logger: Logger(label: "test.stopped")
        )
        _ = try await pool.query("SELECT 1")
        try await server.stop()

        let start = ContinuousClock.now
        for _ in 0..<3 {
            let error = await postgresError { _ = try await pool.query("SELECT 1") }
            #expect(error?.isConnectionError == true)
        }
        let transactionError = await postgresError { try await pool.transaction { _ in } }
        #expect(transactionError?.isConnectionError == true)
        #expect(ContinuousClock.now - start < .seconds(5))
        await pool.shutdown()

        let afterShutdown = await postgresError { _ = try await pool.query("SELECT 1") }
        #expect(afterShutdown?.isConnectionError == true)
    }

    @Test func nothingListening() async throws {
        let closed = RefusingPort()
        defer { withExtendedLifetime(closed) {} }
        let pool = PostgresPool(
            configuration: PostgresConfiguration(
                connectionString: "host=127.0.0.1 port=\(closed.port) user=postgres dbname=none",
                connectTimeoutSeconds: 2
            ),
            logger: Logger(label: "test.nothing")
        )
        let error = await postgresError { _ = try await pool.query("SELECT 1") }
        #expect(error?.kind == .connection)
        await pool.shutdown()
    }
}
