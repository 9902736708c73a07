import Hummingbird
import NIOCore

/// Request context that keeps the connection's channel, so a stream can end the moment its client vanishes
/// (the channel closes) instead of at the next write, and the authenticated user of `/chats` routes.
public struct HeraldRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel
    /// The JWT `sub` of the caller, set by `UserAuthenticationMiddleware`.
    public var user: String?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// The caller; routes behind the authentication middleware always have one.
    func requireUser() throws -> String {
        guard let user else { throw APIError.unauthorized("authentication required") }
        return user
    }
}
