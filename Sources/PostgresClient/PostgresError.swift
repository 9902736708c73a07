/// An error from the pool, libpq, or the server.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// The connection could not be opened, was lost, or the pool is shut down.
        case connection
        /// The server rejected the statement; `sqlState` says why.
        case server
        /// The calling task was cancelled before the statement was sent.
        case cancelled
    }

    public var kind: Kind
    public var message: String
    /// The five-character SQLSTATE (`PG_DIAG_SQLSTATE`), when the server sent one.
    public var sqlState: String?

    public init(kind: Kind, message: String, sqlState: String? = nil) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
    }

    /// True when retrying on another connection could succeed: the connection failed or was lost, or the server
    /// reported a connection exception (class 08) or is shutting down / restarting (57P01, 57P02, 57P03).
    public var isConnectionError: Bool {
        if kind == .connection { return true }
        guard let sqlState else { return false }
        return sqlState.hasPrefix("08") || ["57P01", "57P02", "57P03"].contains(sqlState)
    }

    public var description: String {
        var text = "PostgresError(\(kind)"
        if let sqlState { text += ", \(sqlState)" }
        return text + "): \(message)"
    }

    static let poolShutDown = PostgresError(kind: .connection, message: "the connection pool is shut down")
    static let cancelled = PostgresError(kind: .cancelled, message: "the task was cancelled")
}
