import Hummingbird
import NIOCore

/// Request context that keeps the connection's channel, so a stream can end the moment its client vanishes
/// (the channel closes) instead of at the next write.
public struct HeraldRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }
}
