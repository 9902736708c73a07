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
        chats.post("batch-delete", use: batchDelete)
        // A literal segment outranks `:thread_id` in Hummingbird's trie, whatever the order of registration.
        chats.delete("empty", use: deleteEmptyThreads)
        chats.get(":thread_id", use: getThread)
        chats.patch(":thread_id", use: renameThread)
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
        /// True when the reply came from the response cache (the run is `completed` already); omitted otherwise.
        let cached: Bool?
    }

    /// Ids as `UUID.text`: lowercase, like every id Herald writes.
    struct BatchDeleteResult: Encodable {
        let deleted: [String]
        let notFound: [String]
        enum CodingKeys: String, CodingKey {
            case deleted
            case notFound = "not_found"
        }
    }

    struct DeletedThreads: Encodable {
        let deleted: [String]
        let count: Int
    }

    /// Ids one batch delete takes at most.
    static let maxBatchDeleteIDs = 100

    @Sendable func createThread(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let fields = try Fields(
            object: try await RequestBody.jsonObject(of: request, limit: configuration.maxBodyBytes, maxDepth: configuration.maxJSONDepth),
            allowed: ["title", "metadata"]
        )
        let thread = try await store.createThread(
            owner: try context.requireUser(), title: try fields.optionalString("title", maxBytes: ChatThread.maxTitleBytes),
            metadata: try fields.metadata()
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

    /// Other users' threads are reported `not_found`, exactly like ids that never existed.
    @Sendable func batchDelete(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let fields = try Fields(
            object: try await RequestBody.jsonObject(of: request, limit: configuration.maxBodyBytes, maxDepth: configuration.maxJSONDepth),
            allowed: ["ids"]
        )
        let ids = try fields.uuids("ids", max: Self.maxBatchDeleteIDs)
        let deleted = ids.isEmpty ? [] : try await coordinator.deleteThreads(ids, owner: user)
        return try JSONResponse.make(
            .ok, BatchDeleteResult(
                deleted: ids.filter(deleted.contains).map(\.text), notFound: ids.filter { !deleted.contains($0) }.map(\.text)
            )
        )
    }

    @Sendable func deleteEmptyThreads(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let deleted = try await coordinator.deleteEmptyThreads(owner: try context.requireUser())
        return try JSONResponse.make(.ok, DeletedThreads(deleted: deleted.map(\.text), count: deleted.count))
    }

    /// A new title does not reach open streams: no stream event carries thread fields.
    @Sendable func renameThread(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        let user = try context.requireUser()
        let fields = try Fields(
            object: try await RequestBody.jsonObject(of: request, limit: configuration.maxBodyBytes, maxDepth: configuration.maxJSONDepth),
            allowed: ["title"]
        )
        guard fields.object["title"] != nil else { throw APIError.invalid("title is required (a string, or null to clear it)") }
        let thread = try await store.renameThread(id, owner: user, title: try fields.optionalString("title", maxBytes: ChatThread.maxTitleBytes))
        return try JSONResponse.make(.ok, thread)
    }

    @Sendable func send(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let id = try context.parameters.uuid("thread_id")
        let user = try context.requireUser()
        let fields = try Fields(
            object: try await RequestBody.jsonObject(of: request, limit: configuration.maxBodyBytes, maxDepth: configuration.maxJSONDepth),
            allowed: ["content", "metadata", "use_cache"]
        )
        let sent = try await sender.send(thread: id, user: user, fields: fields)
        return try JSONResponse.make(.accepted, SendResult(message: sent.message, run: sent.run, cached: sent.cached ? true : nil))
    }
}
