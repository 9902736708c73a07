/// One checked-out connection, handed to a `PostgresPool.transaction` body on its pool thread.
///
/// Not Sendable and must not escape the body: once the body returns, every call throws.
public final class PostgresConnection {
    private let handle: ConnectionHandle
    private var isValid = true

    init(handle: ConnectionHandle) {
        self.handle = handle
    }

    func invalidate() {
        isValid = false
    }

    /// Runs one statement (blocking). Parameters are sent as text, `nil` as NULL; cast in SQL, e.g. `$1::uuid`.
    public func query(_ sql: String, _ parameters: [String?] = []) throws -> PostgresResult {
        try checkValid()
        return try handle.query(sql, parameters)
    }

    /// Runs a multi-statement script without parameters (blocking).
    public func execute(script: String) throws {
        try checkValid()
        try handle.execute(script: script)
    }

    private func checkValid() throws {
        guard isValid else {
            throw PostgresError(kind: .connection, message: "PostgresConnection used after its transaction ended")
        }
    }
}

@available(*, unavailable)
extension PostgresConnection: Sendable {}
