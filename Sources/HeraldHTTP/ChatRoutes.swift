import Foundation
import HeraldCore
import Hummingbird

/// `/chats`: threads, messages, send. Each route acts for the authenticated user; another user's thread
/// answers exactly like a missing one.
struct ChatRoutes {
    let sender: MessageSender
    let configuration: HeraldConfiguration

    var coordinator: RunCoordinator { sender.coordinator }
    var store: ChatStore { coordinator.store }

    func register(on chats: RouterGroup<HeraldRequestContext>) {
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
        let fields = try Fields(
            object: try await RequestBody.jsonObject(of: request, limit: configuration.maxBodyBytes, maxDepth: configuration.maxJSONDepth),
            allowed: ["title", "metadata"]
        )
        let thread = try await store.createThread(
            owner: try context.requireUser(), title: try fields.optionalString("title", maxBytes: 1024), metadata: try fields.metadata()
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
        let page = try await store.listThreads(owner: try context.requireUser(), limit: limit, before: cursor)
        return try JSONResponse.make(.ok, ThreadPage(threads: page.threads, nextCursor: page.next?.token))
    }

    @Sendable func getThread(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        let user = try context.requireUser()
        let thread = try await store.thread(id, owner: user)
        let messages = try await store.messages(thread: id, owner: user, after: nil, limit: 10_000)
        return try JSONResponse.make(.ok, ThreadWithMessages(thread: thread, messages: messages))
    }

    @Sendable func listMessages(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        let limit = try request.queryInt("limit", default: 100, range: 1...1000)
        var after: UUID?
        if let text = request.uri.queryParameters.get("after") {
            guard let parsed = UUID(text: text) else { throw APIError.invalid("after must be a message id (UUID)") }
            guard try await store.messageExists(parsed, thread: id) else { throw APIError.invalid("after is not a message of this thread") }
            after = parsed
        }
        let messages = try await store.messages(thread: id, owner: try context.requireUser(), after: after, limit: limit)
        return try JSONResponse.make(.ok, MessagePage(messages: messages))
    }

    @Sendable func deleteThread(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        try await coordinator.deleteThread(id, owner: try context.requireUser())
        return Response(status: .noContent)
    }

    @Sendable func send(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        let user = try context.requireUser()
        let fields = try Fields(
            object: try await RequestBody.jsonObject(of: request, limit: configuration.maxBodyBytes, maxDepth: configuration.maxJSONDepth),
            allowed: ["content", "metadata"]
        )
        let (message, run) = try await sender.send(thread: id, user: user, fields: fields)
        return try JSONResponse.make(.accepted, SendResult(message: message, run: run))
    }
}
