import CLibpq
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One libpq connection (`PGconn`). Every method blocks and must run on the pool's thread pool.
///
/// `@unchecked Sendable`: a `PGconn` must not be used by two threads at once. The pool owns every handle and lends it
/// to one borrower at a time (leases pass through the `PoolState` actor, which orders the hand-overs); the borrower
/// touches it only inside a single work item on the pool's `NIOThreadPool`. So the handle moves between threads but is
/// never used concurrently, which libpq allows.
final class ConnectionHandle: @unchecked Sendable {
    private var connection: OpaquePointer?
    let logger: Logger

    private init(connection: OpaquePointer, logger: Logger) {
        self.connection = connection
        self.logger = logger
        // Route server notices (NOTICE, WARNING) to the logger instead of libpq's default, stderr. `self` outlives
        // the PGconn: the connection is finished in `close()` at the latest from `deinit`.
        PQsetNoticeProcessor(connection, { context, message in
            guard let context, let message else { return }
            let handle = Unmanaged<ConnectionHandle>.fromOpaque(context).takeUnretainedValue()
            let text = String(cString: message).trimmingWhitespace()
            if text.hasPrefix("WARNING") {
                handle.logger.warning("postgres: \(text)")
            } else {
                handle.logger.debug("postgres: \(text)")
            }
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        close()
    }

    /// Opens a connection (blocking, bounded by `connect_timeout`).
    static func connect(configuration: PostgresConfiguration, logger: Logger) throws -> ConnectionHandle {
        // Keywords are processed in order and later ones win. `connect_timeout` comes before the expanded
        // connection string so that the string's own value wins; `client_encoding` comes after it because
        // results are decoded as UTF-8.
        var keywords: [String] = []
        var values: [String] = []
        if configuration.connectTimeoutSeconds > 0 {
            keywords.append("connect_timeout")
            values.append(String(configuration.connectTimeoutSeconds))
        }
        keywords += ["fallback_application_name", "dbname", "client_encoding"]
        values += ["herald", configuration.connectionString, "UTF8"]

        let connection = withCStringArray(keywords) { keywords in
            withCStringArray(values) { values in
                PQconnectdbParams(keywords, values, 1)
            }
        }
        guard let connection else {
            throw PostgresError(kind: .connection, message: "libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(connection)).trimmingWhitespace()
            PQfinish(connection)
            throw PostgresError(kind: .connection, message: message.isEmpty ? "could not connect" : message)
        }
        return ConnectionHandle(connection: connection, logger: logger)
    }

    /// Finishes the connection; later calls fail with a connection error.
    func close() {
        if let connection {
            PQfinish(connection)
            self.connection = nil
        }
    }

    /// An idle connection has nothing to read. If its socket is readable, hung up or in error, the server has sent
    /// something unexpected: most likely a FATAL message before closing (restart, `pg_terminate_backend`, idle
    /// timeout). Such a connection is replaced before use rather than failing the statement.
    func isStale() -> Bool {
        guard let connection, PQstatus(connection) == CONNECTION_OK else { return true }
        let socket = PQsocket(connection)
        guard socket >= 0 else { return true }
        var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) != 0
    }

    /// Leaves the connection idle and outside any transaction. Returns false when it must be discarded instead.
    func resetForReuse() -> Bool {
        guard let connection, PQstatus(connection) == CONNECTION_OK else { return false }
        switch PQtransactionStatus(connection) {
        case PQTRANS_IDLE:
            return true
        case PQTRANS_INTRANS, PQTRANS_INERROR:
            rollback()
            return PQstatus(connection) == CONNECTION_OK && PQtransactionStatus(connection) == PQTRANS_IDLE
        default:
            // PQTRANS_ACTIVE (e.g. stuck in COPY) or PQTRANS_UNKNOWN.
            return false
        }
    }

    var isInFailedTransaction: Bool {
        guard let connection else { return false }
        return PQtransactionStatus(connection) == PQTRANS_INERROR
    }

    /// Rolls back the current transaction, if any, ignoring errors (a broken connection is discarded afterwards).
    func rollback() {
        guard let connection, PQstatus(connection) == CONNECTION_OK,
            PQtransactionStatus(connection) != PQTRANS_IDLE
        else { return }
        if let result = PQexec(connection, "ROLLBACK") {
            PQclear(result)
        }
    }

    /// One statement with text parameters (`PQexecParams`); results in text form.
    func query(_ sql: String, _ parameters: [String?]) throws -> PostgresResult {
        guard let connection else { throw PostgresError(kind: .connection, message: "the connection is closed") }
        guard parameters.count <= Int(UInt16.max) else {
            throw PostgresError(kind: .server, message: "too many parameters: \(parameters.count)", sqlState: "54000")
        }
        var copies: [UnsafeMutablePointer<CChar>?] = []
        copies.reserveCapacity(parameters.count)
        defer { copies.forEach { free($0) } }
        for (position, parameter) in parameters.enumerated() {
            guard let parameter else {
                copies.append(nil)
                continue
            }
            guard !parameter.utf8.contains(0) else {
                throw PostgresError(
                    kind: .server,
                    message: "invalid byte sequence for encoding \"UTF8\": 0x00 in parameter $\(position + 1)",
                    sqlState: "22021"
                )
            }
            copies.append(strdup(parameter))
        }
        let values = copies.map { $0.map { UnsafePointer($0) } }
        let result = PQexecParams(connection, sql, Int32(values.count), nil, values, nil, nil, 0)
        return try makeResult(result, connection: connection)
    }

    /// A script of any number of statements without parameters (`PQexec`).
    func execute(script: String) throws {
        guard let connection else { throw PostgresError(kind: .connection, message: "the connection is closed") }
        _ = try makeResult(PQexec(connection, script), connection: connection)
    }

    /// Runs a statement and returns its command tag, e.g. "COMMIT" or "ROLLBACK".
    func command(_ sql: String) throws -> String {
        guard let connection else { throw PostgresError(kind: .connection, message: "the connection is closed") }
        let result = PQexec(connection, sql)
        let tag = result.map { String(cString: PQcmdStatus($0)) } ?? ""
        _ = try makeResult(result, connection: connection)
        return tag
    }

    private func makeResult(_ result: OpaquePointer?, connection: OpaquePointer) throws -> PostgresResult {
        guard let result else {
            let message = String(cString: PQerrorMessage(connection)).trimmingWhitespace()
            throw PostgresError(kind: .connection, message: message.isEmpty ? "no result from libpq" : message)
        }
        defer { PQclear(result) }

        let status = PQresultStatus(result)
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            break
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
            var message = String(cString: PQresultErrorMessage(result)).trimmingWhitespace()
            if message.isEmpty {
                message = String(cString: PQerrorMessage(connection)).trimmingWhitespace()
            }
            let sqlState = PQresultErrorField(result, diagnosticSQLState).map { String(cString: $0) }
            let lost = PQstatus(connection) != CONNECTION_OK
            throw PostgresError(kind: lost ? .connection : .server, message: message, sqlState: sqlState)
        default:
            // COPY and pipeline results are not supported; the connection is discarded afterwards if it is stuck.
            throw PostgresError(
                kind: .server,
                message: "unsupported result status \(String(cString: PQresStatus(status)))"
            )
        }

        let columnCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        let columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        var rows: [PostgresRow] = []
        rows.reserveCapacity(rowCount)
        for row in 0..<Int32(rowCount) {
            var values: [String?] = []
            values.reserveCapacity(columnCount)
            for column in 0..<Int32(columnCount) {
                if PQgetisnull(result, row, column) != 0 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(result, row, column)))
                }
            }
            rows.append(PostgresRow(columns: columns, values: values))
        }
        let affectedRows = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PostgresResult(columns: columns, rows: rows, affectedRows: affectedRows)
    }
}

/// `PG_DIAG_SQLSTATE` ('C'); Swift does not import character-literal macros.
private let diagnosticSQLState = Int32(UInt8(ascii: "C"))

/// Calls `body` with a NULL-terminated array of C strings that lives for the duration of the call.
private func withCStringArray<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    return body(copies.map { $0.map { UnsafePointer($0) } } + [nil])
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
