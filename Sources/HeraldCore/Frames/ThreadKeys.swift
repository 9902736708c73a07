import Foundation

/// Redis names of one thread: the pub/sub channel, the capped replay log and the runs' delta sets. User input
/// never reaches a key name except as a parsed UUID, so no request can touch another key.
///
/// On a cluster (`sharded`), the thread id is the names' hash tag (`sse:thread:{<id>}`, `sse:thread:{<id>}:log`,
/// …), so they share a slot and one script touches them all on the shard that owns it; frames go out with
/// `SPUBLISH`, to that shard's subscribers only.
public struct ThreadKeys: Sendable {
    public let prefix: String
    public let sharded: Bool

    public init(prefix: String, sharded: Bool = false) {
        self.prefix = prefix
        self.sharded = sharded
    }

    public func channel(_ thread: UUID) -> String { sharded ? prefix + "{" + thread.text + "}" : prefix + thread.text }
    public func log(_ thread: UUID) -> String { channel(thread) + ":log" }
    public func deltaIndexes(_ thread: UUID, run: UUID) -> String { channel(thread) + ":deltas:" + run.text }

    /// The command that publishes to a thread's channel.
    public var publishCommand: String { sharded ? "SPUBLISH" : "PUBLISH" }
}
