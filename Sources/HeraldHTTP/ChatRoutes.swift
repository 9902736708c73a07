import Foundation
import HeraldCore
import Hummingbird

/// `/chats`: threads, messages, send.
struct ChatRoutes {
    let coordinator: RunCoordinator
    let configuration: HeraldConfiguration
    /// Until authentication lands every thread belongs to one owner.
    static let defaultOwner = "default"

    var store: ChatStore { coordinator.store }

    func register(on router: Router<HeraldRequestContext>) {
        let chats = router.group("chats")
        chats.post(use: createThread)
        chats.get(use: listThreads)
        chats.get(":thread_id", use: getThread)
        chats.delete(":thread_id", use: deleteThread)
        chats.get(":thread_id/messages", use: listMessages)
        chats.post(":thread_id/send", use: send)
    }

    struct ThreadPage: Encodable {
        let threads: [ChatThread]
        let nextCursor: String?
        enum CodingKeys: String, CodingKey {
            case threads
            case nextCursor = "next_cursor"
        }
    }

    struct ThreadWithMessages: Encodable {
        let thread: ChatThread
        let messages: [ChatMessage]
    }

    struct MessagePage: Encodable {
        let messages: [ChatMessage]
    }

    struct SendResult: Encodable {
        let message: ChatMessage
        let run: ChatRun
    }

    @Sendable func createThread(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let fields = Fields(object: try await RequestBody.jsonObject(of: request, limit: configuration.maxBodyBytes))
        let thread = try await store.createThread(
            owner: Self.defaultOwner, title: try fields.optionalString("title", maxBytes: 1024), metadata: try fields.metadata()
        )
        return try JSONResponse.make(.created, thread)
    }

    @Sendable func listThreads(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let limit = try request.queryInt("limit", default: 50, range: 1...200)
        var cursor: ThreadCursor?
        if let token = request.uri.queryParameters.get("cursor") {
            guard let parsed = ThreadCursor(token: token) else { throw APIError.invalid("cursor is not one this API returned") }
            cursor = parsed
        }
        let page = try await store.listThreads(owner: Self.defaultOwner, limit: limit, before: cursor)
        return try JSONResponse.make(.ok, ThreadPage(threads: page.threads, nextCursor: page.next?.token))
    }

    @Sendable func getThread(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        let thread = try await store.thread(id, owner: Self.defaultOwner)
        let messages = try await store.messages(thread: id, owner: Self.defaultOwner, after: nil, limit: 10_000)
        return try JSONResponse.make(.ok, ThreadWithMessages(thread: thread, messages: messages))
    }

    @Sendable func listMessages(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        let limit = try request.queryInt("limit", default: 100, range: 1...1000)
        var after: UUID?
        if let text = request.uri.queryParameters.get("after") {
            guard let parsed = UUID(uuidString: String(text)) else { throw APIError.invalid("after must be a message id (UUID)") }
            guard try await store.messageExists(parsed, thread: id) else { throw APIError.invalid("after is not a message of this thread") }
            after = parsed
        }
        let messages = try await store.messages(thread: id, owner: Self.defaultOwner, after: after, limit: limit)
        return try JSONResponse.make(.ok, MessagePage(messages: messages))
    }

    @Sendable func deleteThread(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        try await coordinator.deleteThread(id, owner: Self.defaultOwner)
        return Response(status: .noContent)
    }

    @Sendable func send(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        let fields = Fields(object: try await RequestBody.jsonObject(of: request, limit: configuration.maxBodyBytes))
        guard let content = try fields.optionalString("content", maxBytes: configuration.maxContentBytes) else {
            throw APIError.invalid("content is required")
        }
        guard !content.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw APIError.invalid("content must not be empty") }
        let (message, run) = try await coordinator.send(thread: id, owner: Self.defaultOwner, content: content, metadata: try fields.metadata())
        return try JSONResponse.make(.accepted, SendResult(message: message, run: run))
    }
}
