import Foundation
import HeraldCore
import HTTPTypes

/// A user's message to a thread, from whichever transport it came (`POST /chats/{id}/send`, a WebSocket's
/// `send`): the content's checks, the per-user rate limit, then the stored message and its run.
struct MessageSender: Sendable {
    let coordinator: RunCoordinator
    let rateLimiter: SendRateLimiter
    let configuration: HeraldConfiguration

    /// Sends the `content` (and optional `metadata` and `use_cache`) of `fields` to `thread` as `user`.
    func send(thread: UUID, user: String, fields: Fields) async throws -> (message: ChatMessage, run: ChatRun, cached: Bool) {
        guard let content = try fields.optionalString("content", maxBytes: configuration.maxContentBytes) else {
            throw APIError.invalid("content is required")
        }
        guard !content.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw APIError.invalid("content must not be empty") }
        let metadata = try fields.metadata()
        let useCache = try fields.optionalBool("use_cache") ?? false
        do {
            try await rateLimiter.admit(user)
        } catch let exceeded as SendRateLimiter.Exceeded {
            var error = APIError(.tooManyRequests, "rate_limited", "more than \(configuration.sendsPerMinute) sends per minute")
            error.headers[.retryAfter] = String(exceeded.retryAfterSeconds)
            throw error
        }
        return try await coordinator.send(thread: thread, owner: user, content: content, metadata: metadata, useCache: useCache)
    }
}
