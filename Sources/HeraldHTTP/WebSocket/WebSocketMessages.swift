import Foundation
import HeraldCore
import HTTPTypes
import NIOCore

/// What a WebSocket client sends: one JSON object per text message, told apart by `type` (docs/api.md).
enum ClientMessage {
    case subscribe(thread: UUID, lastEventID: String?)
    case unsubscribe(thread: UUID)
    case send(thread: UUID, clientID: String?, fields: Fields)
    case ping

    /// A message that could not be read, with whatever of it can still be echoed back to tell replies apart.
    struct Refused: Error {
        let error: APIError
        var thread: UUID?
        var clientID: String?
    }

    static func parse(_ data: ByteBuffer, maxDepth: Int) throws(Refused) -> ClientMessage {
        let object: [String: JSONValue]
        do {
            object = try RequestBody.jsonObject(in: data, maxDepth: maxDepth, what: "message")
        } catch {
            throw Refused(error: error as? APIError ?? .badRequest("message is not valid JSON"))
        }
        var thread: UUID?
        if case .string(let text)? = object["thread_id"] { thread = UUID(text: text) }
        var clientID: String?
        if case .string(let text)? = object["client_id"], text.utf8.count <= 128 { clientID = text }
        do {
            guard case .string(let type)? = object["type"] else { throw APIError.invalid("type must be a string") }
            switch type {
            case "ping":
                _ = try Fields(object: object, allowed: ["type"])
                return .ping
            case "subscribe":
                let fields = try Fields(object: object, allowed: ["type", "thread_id", "last_event_id"])
                return .subscribe(thread: try requireThread(thread, in: object), lastEventID: try fields.optionalString("last_event_id", maxBytes: 64))
            case "unsubscribe":
                _ = try Fields(object: object, allowed: ["type", "thread_id"])
                return .unsubscribe(thread: try requireThread(thread, in: object))
            case "send":
                let fields = try Fields(object: object, allowed: ["type", "thread_id", "content", "metadata", "use_cache", "client_id"])
                if object["client_id"] != nil, clientID == nil {
                    throw APIError.invalid("client_id must be a string of at most 128 bytes")
                }
                return .send(thread: try requireThread(thread, in: object), clientID: clientID, fields: fields)
            default:
                throw APIError(.badRequest, "unknown_type", "type must be subscribe, unsubscribe, send or ping")
            }
        } catch {
            throw Refused(error: error as? APIError ?? .invalid("message is not valid"), thread: thread, clientID: clientID)
        }
    }

    private static func requireThread(_ thread: UUID?, in object: [String: JSONValue]) throws -> UUID {
        guard let thread else { throw APIError(.badRequest, "invalid_id", "thread_id must be a UUID") }
        return thread
    }
}

/// What the server sends besides events (those are `FrameMessage`s, framed once per loop).
enum ServerMessage {
    struct Subscribed: Encodable {
        let type = "subscribed"
        let threadID: String
        /// The `last_event_id` was not a stream id: the client should refetch the thread over REST.
        let resync: Bool?
        enum CodingKeys: String, CodingKey {
            case type, resync
            case threadID = "thread_id"
        }
    }

    struct Unsubscribed: Encodable {
        let type = "unsubscribed"
        let threadID: String
        /// `client` (asked for) or `thread_deleted`.
        let reason: String
        enum CodingKeys: String, CodingKey {
            case type, reason
            case threadID = "thread_id"
        }
    }

    struct Ack: Encodable {
        let type = "ack"
        let clientID: String?
        let message: ChatMessage
        let run: ChatRun
        /// As in the answer of `POST /chats/{id}/send`: true when the reply came from the response cache.
        let cached: Bool?
        enum CodingKeys: String, CodingKey {
            case type, message, run, cached
            case clientID = "client_id"
        }
    }

    struct Failure: Encodable {
        let type = "error"
        let code: String
        let message: String
        let threadID: String?
        let clientID: String?
        enum CodingKeys: String, CodingKey {
            case type, code, message
            case threadID = "thread_id"
            case clientID = "client_id"
        }

        init(_ error: APIError, thread: UUID? = nil, clientID: String? = nil) {
            self.code = error.code
            self.message = error.message
            self.threadID = thread?.text
            self.clientID = clientID
        }
    }

    struct Pong: Encodable {
        let type = "pong"
    }

    static func json(_ message: some Encodable) -> [UInt8] {
        // Every message is strings, UUIDs and the REST API's own models: encoding cannot fail.
        (try? JSONResponse.encoder.encode(message)).map(Array.init) ?? []
    }
}
