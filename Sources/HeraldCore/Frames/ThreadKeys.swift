import Foundation

/// Redis names of one thread: the pub/sub channel and the capped replay log. User input never reaches a key
/// name except as a parsed UUID, so no request can touch another key.
public struct ThreadKeys: Sendable {
    public let prefix: String

    public init(prefix: String) {
        self.prefix = prefix
    }

    public func channel(_ thread: UUID) -> String { prefix + thread.text }
    public func log(_ thread: UUID) -> String { prefix + thread.text + ":log" }
    public func deltaIndexes(_ thread: UUID, run: UUID) -> String { prefix + thread.text + ":deltas:" + run.text }
}
