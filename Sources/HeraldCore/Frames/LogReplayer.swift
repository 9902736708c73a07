import Foundation
import NIOCore
import RedisClient

/// Reads a thread's log after a given id: the catch-up half of resume.
public struct LogReplayer: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// Complete frames (`id:` line included) after the asked id, oldest first; `lastID` is the newest one.
        case frames([ByteBuffer], lastID: StreamID?)
        /// Frames after the asked id are gone (trimmed or expired): the client must refetch over REST.
        /// `latestID` is the newest id the log holds, if any, so the client can resume from there.
        case gap(latestID: StreamID?)
    }

    /// One round trip decides the gap and reads the entries, so nothing can be trimmed in between.
    /// ARGV[1] is the id the reader has seen (`0-0` = from the start); ARGV[2] is `1` when that id came from
    /// the client (an expired log is then a gap); ARGV[3] bounds the entries read.
    /// A seen id older than the first entry means entries after it may be gone; from `0-0`, only a log that
    /// has been trimmed (`entries-added` > `length`) has lost anything.
    static let replayScript = RedisScript(
        """
        local function parse(id)
          local ms, seq = string.match(id, '^(%d+)-(%d+)$')
          return tonumber(ms), tonumber(seq)
        end
        local function older(a, b)
          local am, as = parse(a)
          local bm, bs = parse(b)
          return am < bm or (am == bm and as < bs)
        end
        if redis.call('EXISTS', KEYS[1]) == 0 then
          if ARGV[2] == '1' and ARGV[1] ~= '0-0' then return {1, false} end
          return {0, {}}
        end
        local info = redis.call('XINFO', 'STREAM', KEYS[1])
        local fields = {}
        for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
        local first = fields['first-entry']
        local last = fields['last-generated-id']
        if first then
          if ARGV[1] == '0-0' then
            if tonumber(fields['entries-added']) > tonumber(fields['length']) then return {1, last} end
          elseif older(ARGV[1], first[1]) then
            return {1, last}
          end
        end
        return {0, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[3])}
        """
    )

    let redis: any RedisCommands
    let keys: ThreadKeys
    let maxEntries: Int

    public init(redis: any RedisCommands, keys: ThreadKeys, logMaxLength: Int) {
        self.redis = redis
        self.keys = keys
        // MAXLEN ~ may keep somewhat more than asked; read generously so a full log is replayed whole.
        self.maxEntries = logMaxLength * 2 + 128
    }

    public func frames(of thread: UUID, after seen: StreamID, seenByClient: Bool) async throws(DependencyUnavailable) -> Outcome {
        let reply = try await redis.evalForRequest(
            Self.replayScript,
            keys: [keys.log(thread)],
            arguments: [.string(seen.description), .string(seenByClient ? "1" : "0"), .string(String(maxEntries))]
        )
        guard let parts = reply.array, parts.count == 2 else {
            throw DependencyUnavailable(dependency: "redis", underlying: "unexpected replay reply \(reply)")
        }
        if parts[0].int == 1 {
            return .gap(latestID: parts[1].string.flatMap(StreamID.init))
        }
        var frames: [ByteBuffer] = []
        var lastID: StreamID?
        let allocator = ByteBufferAllocator()
        for entry in parts[1].array ?? [] {
            guard let pair = entry.array, pair.count == 2, let idText = pair[0].string,
                  let fields = pair[1].array, fields.count >= 2, let body = fields[1].buffer
            else { continue }
            frames.append(FrameEncoder.frame(id: idText, body: body, allocator: allocator))
            lastID = StreamID(idText)
        }
        return .frames(frames, lastID: lastID)
    }

    /// The newest id in the thread's log (`0-0` when there is none): where a fresh stream starts counting.
    public func latestID(of thread: UUID) async throws(DependencyUnavailable) -> StreamID {
        do {
            let log = keys.log(thread)
            let reply = try await redis.send(["XREVRANGE", .string(log), "+", "-", "COUNT", "1"], key: log)
            return reply.array?.first?.array?.first?.string.flatMap(StreamID.init) ?? .zero
        } catch {
            throw DependencyUnavailable(dependency: "redis", underlying: "\(error)")
        }
    }
}
