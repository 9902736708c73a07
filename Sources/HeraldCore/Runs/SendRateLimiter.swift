import Crypto
import Foundation
import RedisClient

/// Sends per user per minute, counted in Redis so the limit holds across nodes: a fixed one-minute window
/// per user. The key holds a hash of the user id, never the id itself.
public struct SendRateLimiter: Sendable {
    public struct Exceeded: Error {
        public let retryAfterSeconds: Int
    }

    static let script = RedisScript(
        """
        local count = redis.call('INCR', KEYS[1])
        if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
        return {count, redis.call('TTL', KEYS[1])}
        """
    )

    let redis: any RedisCommands
    let prefix: String
    let perMinute: Int

    public init(redis: any RedisCommands, prefix: String, perMinute: Int) {
        self.redis = redis
        self.prefix = prefix
        self.perMinute = perMinute
    }

    /// Counts one send for `user`; throws `Exceeded` once the window's allowance is used up.
    public func admit(_ user: String) async throws {
        let digest = SHA256.hash(data: Data(user.utf8)).prefix(16).map { String(format: "%02x", $0) }.joined()
        let reply = try await redis.evalForRequest(Self.script, keys: ["\(prefix)ratelimit:send:\(digest)"], arguments: ["60"])
        guard let parts = reply.array, parts.count == 2, let count = parts[0].int else { return }
        if count > perMinute {
            throw Exceeded(retryAfterSeconds: max(1, parts[1].int ?? 60))
        }
    }
}
