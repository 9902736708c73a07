import HeraldCore
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore

/// Request context that keeps the connection's channel, so a stream can end the moment its client vanishes
/// (the channel closes) instead of at the next write, and the authenticated user of `/chats` routes.
public struct HeraldRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel
    /// The JWT `sub` of the caller, set by `UserAuthenticationMiddleware`.
    public var user: String?
    /// Set when `RequestHandoff` runs the request: the stream route leaves its stream here instead of keeping a
    /// task in the response body for as long as the stream lasts.
    let handoff: RequestHandoff.Slot?

    public init(source: ApplicationRequestContextSource) {
        self.init(source: source, handoff: nil)
    }

    init(source: ApplicationRequestContextSource, handoff: RequestHandoff.Slot?) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
        self.handoff = handoff
    }

    /// The caller; routes behind the authentication middleware always have one.
    func requireUser() throws -> String {
        guard let user else { throw APIError.unauthorized("authentication required") }
        return user
    }
}
