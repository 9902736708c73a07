import Foundation

/// The fixed set of SSE event names. Nothing user- or engine-controlled ever becomes an event name.
public enum StreamEventName: String, Sendable, CaseIterable {
    case messageUpdate = "message_update"
    case delta
    case runStatus = "run_status"
    case error
    case threadDeleted = "thread_deleted"
    case resync
}

/// One event on a thread's stream, before it becomes frame bytes.
public enum StreamEvent: Sendable {
    case messageUpdate(MessageUpdate)
    case delta(Delta)
    case runStatus(RunStatusUpdate)
    case error(RunError)
    case threadDeleted(ThreadDeleted)
    case resync(Resync)

    public struct MessageUpdate: Sendable, Codable, Equatable {
        public var threadID: UUID
        public var runID: UUID?
        public var message: ChatMessage
        /// True on the frames of a reply served from the response cache; nil (omitted from the JSON) otherwise.
        public var cached: Bool?
        enum CodingKeys: String, CodingKey {
            case message, cached
            case threadID = "thread_id"
            case runID = "run_id"
        }
    }

    public struct Delta: Sendable, Codable, Equatable {
        public var threadID: UUID
        public var runID: UUID
        public var messageID: UUID
        public var index: Int
        public var delta: String
        /// True on the frames of a reply served from the response cache; nil (omitted from the JSON) otherwise.
        public var cached: Bool?
        enum CodingKeys: String, CodingKey {
            case index, delta, cached
            case threadID = "thread_id"
            case runID = "run_id"
            case messageID = "message_id"
        }
    }

    public struct RunStatusUpdate: Sendable, Codable, Equatable {
        public var threadID: UUID
        public var runID: UUID
        public var status: RunStatus
        /// True on the frames of a reply served from the response cache; nil (omitted from the JSON) otherwise.
        public var cached: Bool?
        enum CodingKeys: String, CodingKey {
            case status, cached
            case threadID = "thread_id"
            case runID = "run_id"
        }
    }

    public struct RunError: Sendable, Codable, Equatable {
        public var threadID: UUID
        public var runID: UUID
        public var error: ErrorDetail
        enum CodingKeys: String, CodingKey {
            case error
            case threadID = "thread_id"
            case runID = "run_id"
        }
    }

    public struct ThreadDeleted: Sendable, Codable, Equatable {
        public var threadID: UUID
        enum CodingKeys: String, CodingKey { case threadID = "thread_id" }
    }

    public struct Resync: Sendable, Codable, Equatable {
        public var threadID: UUID
        public var reason: String
        enum CodingKeys: String, CodingKey {
            case reason
            case threadID = "thread_id"
        }
    }

    public var name: StreamEventName {
        switch self {
        case .messageUpdate: .messageUpdate
        case .delta: .delta
        case .runStatus: .runStatus
        case .error: .error
        case .threadDeleted: .threadDeleted
        case .resync: .resync
        }
    }
}
