import Foundation

public enum MessageRole: String, Sendable, Codable {
    case user
    case assistant
}

/// Lifecycle of one agent run. `queued` and `running` are open; the rest are final.
public enum RunStatus: String, Sendable, Codable, CaseIterable {
    case queued
    case running
    case completed
    case failed
    case timedOut = "timed_out"

    public var isFinal: Bool { self != .queued && self != .running }
}

public struct ChatThread: Sendable, Codable, Equatable {
    /// Longest accepted title, in UTF-8 bytes.
    public static let maxTitleBytes = 1024

    public var id: UUID
    public var owner: String
    public var title: String?
    public var metadata: JSONValue
    public var createdAt: String
    public var updatedAt: String

    enum CodingKeys: String, CodingKey {
        case id, owner, title, metadata
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}

public struct ChatMessage: Sendable, Codable, Equatable {
    public var id: UUID
    public var threadID: UUID
    public var runID: UUID?
    public var role: MessageRole
    public var content: String
    /// `complete` for stored messages; `error` for an assistant message that reports a failed run.
    public var status: String
    public var metadata: JSONValue
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case id, role, content, status, metadata
        case threadID = "thread_id"
        case runID = "run_id"
        case createdAt = "created_at"
    }
}

public struct ErrorDetail: Sendable, Codable, Equatable {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

public struct ChatRun: Sendable, Codable, Equatable {
    public var id: UUID
    public var threadID: UUID
    public var status: RunStatus
    /// The assistant reply's id, fixed when the run is created so deltas and the final message share it.
    public var assistantMessageID: UUID
    public var error: ErrorDetail?
    public var createdAt: String
    public var updatedAt: String

    enum CodingKeys: String, CodingKey {
        case id, status, error
        case threadID = "thread_id"
        case assistantMessageID = "assistant_message_id"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}
