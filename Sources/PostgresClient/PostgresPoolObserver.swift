/// What the pool reports for monitoring; the owner decides how to record it (the pool knows no metrics system).
public struct PostgresPoolObserver: Sendable {
    /// A caller got a connection (or a slot to open one) after waiting this long.
    public var leaseAcquired: @Sendable (_ waited: Duration) -> Void
    /// A call failed: the pool, libpq or the server refused it.
    public var callFailed: @Sendable (_ error: PostgresError) -> Void

    public init(
        leaseAcquired: @escaping @Sendable (_ waited: Duration) -> Void,
        callFailed: @escaping @Sendable (_ error: PostgresError) -> Void
    ) {
        self.leaseAcquired = leaseAcquired
        self.callFailed = callFailed
    }

    public static let none = PostgresPoolObserver(leaseAcquired: { _ in }, callFailed: { _ in })
}
