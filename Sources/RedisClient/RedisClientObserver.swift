/// What the command client reports for monitoring; the owner decides how to record it (the client knows no
/// metrics system).
public struct RedisClientObserver: Sendable {
    /// A command waited this long for the connection to be (re)established before it could be sent.
    public var connectionAwaited: @Sendable (_ waited: Duration) -> Void
    /// A command failed: a `RedisError` (an error reply, a lost connection), or the connection could not be
    /// opened (SwiftNIO's error).
    public var commandFailed: @Sendable (_ error: any Error) -> Void
    /// A command (or script) is being sent.
    public var commandSent: @Sendable () -> Void
    /// A cluster shard redirected a command (`MOVED` or `ASK`).
    public var redirected: @Sendable (_ kind: Redirect) -> Void

    public enum Redirect: String, Sendable {
        case moved
        case ask
    }

    public init(
        connectionAwaited: @escaping @Sendable (_ waited: Duration) -> Void,
        commandFailed: @escaping @Sendable (_ error: any Error) -> Void,
        commandSent: @escaping @Sendable () -> Void = {},
        redirected: @escaping @Sendable (_ kind: Redirect) -> Void = { _ in }
    ) {
        self.connectionAwaited = connectionAwaited
        self.commandFailed = commandFailed
        self.commandSent = commandSent
        self.redirected = redirected
    }

    public static let none = RedisClientObserver(connectionAwaited: { _ in }, commandFailed: { _ in })
}
