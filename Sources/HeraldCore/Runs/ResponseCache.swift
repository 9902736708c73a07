import Crypto
import Foundation
import Metrics
import RedisClient

/// Replies of completed runs, kept in Redis for `HERALD_CACHE_TTL_SECONDS` and shared by every node: a send with
/// `use_cache` whose question this assistant has answered before gets that answer without an engine run.
///
/// An entry's key is the hex SHA-256 of the assistant's identity and the normalized question; the Redis key is
/// `{HERALD_CHANNEL_PREFIX}cache:{key}`, so user text never reaches a key name.
struct ResponseCache: Sendable {
    enum Outcome: String, Sendable {
        /// A send with `use_cache` was answered from the cache.
        case hit
        /// A send with `use_cache` found nothing and started a run.
        case miss
        /// A completed run's reply filled the cache.
        case stored
    }

    /// A cached reply is published as at most this many deltas, all at once: far below a stream's queue bound,
    /// so even a long reply never cuts a client as slow.
    static let maxDeltas = 64

    private static let outcomes = MetricHandles { Counter(label: "herald_response_cache_total", dimensions: [("outcome", $0)]) }

    let redis: any RedisCommands
    let prefix: String
    let ttlSeconds: Int
    let assistantIdentity: String

    init(redis: any RedisCommands, prefix: String, ttlSeconds: Int, assistantIdentity: String) {
        self.redis = redis
        self.prefix = prefix
        self.ttlSeconds = ttlSeconds
        self.assistantIdentity = assistantIdentity
    }

    static func count(_ outcome: Outcome) {
        outcomes[outcome.rawValue].increment()
    }

    /// Questions that differ only in case or spacing are one question: trimmed, every run of whitespace one
    /// space, lowercased.
    static func normalized(_ question: String) -> String {
        question.split(whereSeparator: \.isWhitespace).joined(separator: " ").lowercased()
    }

    func key(for question: String) -> String {
        var hash = SHA256()
        hash.update(data: Data(assistantIdentity.utf8))
        // A byte neither part holds keeps ("a b", "c") and ("a", "b c") apart.
        hash.update(data: [0])
        hash.update(data: Data(Self.normalized(question).utf8))
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }

    private func redisKey(_ key: String) -> String { "\(prefix)cache:\(key)" }

    /// The cached reply for `key`, if any; Redis failing is the request's 503, as for every send.
    func reply(for key: String) async throws(DependencyUnavailable) -> String? {
        do {
            let redisKey = redisKey(key)
            return try await redis.send(["GET", .string(redisKey)], key: redisKey).string
        } catch {
            throw DependencyUnavailable(dependency: "redis", underlying: "\(error)")
        }
    }

    func store(_ reply: String, key: String) async throws {
        let redisKey = redisKey(key)
        _ = try await redis.send(["SET", .string(redisKey), .string(reply), "EX", .int(ttlSeconds)], key: redisKey)
        Self.count(.stored)
    }

    /// The reply cut for delta frames: after whitespace, each chunk at least 1/`maxDeltas` of the text, so short
    /// replies stream word by word and no reply takes more than `maxDeltas` frames. The chunks concatenate back
    /// to the reply.
    static func chunks(of reply: String) -> [String] {
        let minimumLength = (reply.count + maxDeltas - 1) / maxDeltas
        var chunks: [String] = []
        var current = "", currentLength = 0
        for character in reply {
            current.append(character)
            currentLength += 1
            if character.isWhitespace, currentLength >= minimumLength {
                chunks.append(current)
                (current, currentLength) = ("", 0)
            }
        }
        if !current.isEmpty { chunks.append(current) }
        return chunks
    }
}
