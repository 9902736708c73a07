import Foundation
import Logging
import Metrics
import NIOCore
import RedisClient
import Tracing

/// Redis could not be reached or answered with an error: callers answer 503 so the sender retries.
public struct DependencyUnavailable: Error, CustomStringConvertible {
    public let dependency: String
    public let underlying: String
    public var description: String { "\(dependency) unavailable: \(underlying)" }
}

extension RedisCommands {
    /// Runs a script for a request in progress: any failure means Redis is unavailable to it (503, retry).
    func evalForRequest(
        _ script: RedisScript, keys: [String], arguments: [RedisArgument]
    ) async throws(DependencyUnavailable) -> RESPValue {
        do {
            return try await eval(script, keys: keys, arguments: arguments)
        } catch {
            throw DependencyUnavailable(dependency: "redis", underlying: "\(error)")
        }
    }
}

/// Publishes frames with one atomic script per call: each body is appended to the thread's capped log
/// (`XADD MAXLEN ~`), whose entry id becomes the frame's `id:`, and the complete frame is `PUBLISH`ed (`SPUBLISH`ed on a cluster).
/// The log's TTL is refreshed by the same script. The frames that end a run also close its delta index set
/// (`final` member), in the same script: from then on no delta of the run is published, whichever node gets it.
public struct FramePublisher: Sendable {
    static let publishSource = """
        local ids = {}
        for i = 3, #ARGV do
          local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'frame', ARGV[i])
          redis.call('PUBLISH', KEYS[1], 'id: ' .. id .. '\\n' .. ARGV[i])
          ids[#ids + 1] = id
        end
        redis.call('EXPIRE', KEYS[2], ARGV[2])
        if KEYS[3] then
          redis.call('SADD', KEYS[3], 'final')
          redis.call('EXPIRE', KEYS[3], ARGV[2])
        end
        return ids
        """

    /// A delta is published once per (run, index): the index set makes repeated deliveries no-ops. A delta
    /// without an index gets the next free one. Returns nil for a repeat, `ended` once the run's final frames
    /// are out, else the frame's id. The run's first published delta is preceded by its `running` frame (ARGV[6])
    /// unless that is out already: an engine may post deltas before its answer to the trigger reaches Herald.
    static let deltaSource = """
        if redis.call('SISMEMBER', KEYS[3], 'final') == 1 then return 'ended' end
        local index = ARGV[3]
        if index == '' then
          index = tostring(redis.call('SCARD', KEYS[3]) - redis.call('SISMEMBER', KEYS[3], 'running'))
          while redis.call('SISMEMBER', KEYS[3], index) == 1 do index = tostring(tonumber(index) + 1) end
        end
        if redis.call('SADD', KEYS[3], index) == 0 then return false end
        redis.call('EXPIRE', KEYS[3], ARGV[2])
        if redis.call('SADD', KEYS[3], 'running') == 1 then
          local runningID = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'frame', ARGV[6])
          redis.call('PUBLISH', KEYS[1], 'id: ' .. runningID .. '\\n' .. ARGV[6])
        end
        local body = ARGV[4] .. index .. ARGV[5]
        local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'frame', body)
        redis.call('PUBLISH', KEYS[1], 'id: ' .. id .. '\\n' .. body)
        redis.call('EXPIRE', KEYS[2], ARGV[2])
        return id
        """

    /// A run's `running` frame, published once (whichever of the trigger's answer, a status webhook or the first
    /// delta comes first) and never after its final frames. Returns the frame's id, nil if it was not published.
    static let runningSource = """
        if redis.call('SISMEMBER', KEYS[3], 'final') == 1 then return false end
        if redis.call('SADD', KEYS[3], 'running') == 0 then return false end
        redis.call('EXPIRE', KEYS[3], ARGV[2])
        local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'frame', ARGV[3])
        redis.call('PUBLISH', KEYS[1], 'id: ' .. id .. '\\n' .. ARGV[3])
        redis.call('EXPIRE', KEYS[2], ARGV[2])
        return id
        """

    private static let durations = MetricHandles { Timer(label: "herald_publish_duration_seconds", dimensions: [("kind", $0)]) }

    /// The scripts above, publishing with `keys.publishCommand` (`SPUBLISH` on a cluster).
    struct Scripts: Sendable {
        let publish: RedisScript
        let delta: RedisScript
        let running: RedisScript

        init(publishCommand: String) {
            func script(_ source: String) -> RedisScript {
                RedisScript(source.replacingOccurrences(of: "'PUBLISH'", with: "'\(publishCommand)'"))
            }
            (publish, delta, running) = (script(publishSource), script(deltaSource), script(runningSource))
        }
    }

    let redis: any RedisCommands
    public let keys: ThreadKeys
    let scripts: Scripts
    let logMaxLength: Int
    let logTTLSeconds: Int

    public init(redis: any RedisCommands, keys: ThreadKeys, logMaxLength: Int, logTTLSeconds: Int) {
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(publishCommand: keys.publishCommand)
        self.logMaxLength = logMaxLength
        self.logTTLSeconds = logTTLSeconds
    }

    /// Publishes `events` in order. `endingRun`: these are the run's final frames; no delta of it follows them.
    @discardableResult
    public func publish(_ events: [StreamEvent], thread: UUID, endingRun: UUID? = nil) async throws(DependencyUnavailable) -> [StreamID] {
        var arguments: [RedisArgument] = [.string(String(logMaxLength)), .string(String(logTTLSeconds))]
        for event in events {
            arguments.append(.bytes(ByteBuffer(bytes: FrameEncoder.body(of: event))))
        }
        let extraKeys = endingRun.map { [keys.deltaIndexes(thread, run: $0)] } ?? []
        let reply = try await run(scripts.publish, kind: "frames", thread: thread, extraKeys: extraKeys, arguments: arguments)
        return (reply.array ?? []).compactMap { $0.string.flatMap(StreamID.init) }
    }

    public enum DeltaOutcome: Sendable, Equatable {
        case published
        /// This (run, index) was published before.
        case duplicate
        /// The run's final frames are out already.
        case runEnded
    }

    /// Publishes a token delta unless this (run, index) was published before or the run has ended.
    public func publishDelta(_ delta: StreamEvent.Delta, index: Int?) async throws(DependencyUnavailable) -> DeltaOutcome {
        let reply = try await run(
            scripts.delta, kind: "delta", thread: delta.threadID, extraKeys: [keys.deltaIndexes(delta.threadID, run: delta.runID)],
            arguments: deltaArguments(delta, index: index)
        )
        return Self.deltaOutcome(reply)
    }

    /// `publishDelta` without suspending, for a webhook answered on its event loop: the script sent at once if Redis
    /// is connected (nil if not). Untraced: tracing takes the async way. Any failure may be retried that way, since a
    /// delta is published once per (run, index) whatever happens.
    public func publishDeltaNow(_ delta: StreamEvent.Delta, index: Int) -> EventLoopFuture<DeltaOutcome>? {
        let start = ContinuousClock.now
        let keys = scriptKeys(delta.threadID, [keys.deltaIndexes(delta.threadID, run: delta.runID)])
        guard let reply = redis.evalNow(scripts.delta, keys: keys, arguments: deltaArguments(delta, index: index)) else { return nil }
        return reply.map { reply in
            Self.durations["delta"].record(since: start)
            return Self.deltaOutcome(reply)
        }
    }

    private func deltaArguments(_ delta: StreamEvent.Delta, index: Int?) -> [RedisArgument] {
        let (beforeIndex, afterIndex) = FrameEncoder.deltaBody(aroundIndexOf: delta)
        return [
            .string(String(logMaxLength)), .string(String(logTTLSeconds)),
            .string(index.map(String.init) ?? ""),
            .bytes(ByteBuffer(bytes: beforeIndex)),
            .bytes(ByteBuffer(bytes: afterIndex)),
            .bytes(ByteBuffer(bytes: FrameEncoder.body(of: .runStatus(.init(threadID: delta.threadID, runID: delta.runID, status: .running))))),
        ]
    }

    private static func deltaOutcome(_ reply: RESPValue) -> DeltaOutcome {
        switch reply.string {
        case nil: .duplicate
        case "ended": .runEnded
        default: .published
        }
    }

    /// Publishes the run's `running` status unless it is out already (see `runningSource`).
    public func publishRunning(_ run: UUID, thread: UUID) async throws(DependencyUnavailable) {
        let arguments: [RedisArgument] = [
            .string(String(logMaxLength)), .string(String(logTTLSeconds)),
            .bytes(ByteBuffer(bytes: FrameEncoder.body(of: .runStatus(.init(threadID: thread, runID: run, status: .running))))),
        ]
        _ = try await self.run(scripts.running, kind: "frames", thread: thread, extraKeys: [keys.deltaIndexes(thread, run: run)], arguments: arguments)
    }

    /// One script call, timed (`herald_publish_duration_seconds{kind}`) and traced (a producer span).
    /// The keys a publishing script is given: the thread's channel and log, then the script's own.
    private func scriptKeys(_ thread: UUID, _ extraKeys: [String]) -> [String] {
        [keys.channel(thread), keys.log(thread)] + extraKeys
    }

    private func run(
        _ script: RedisScript, kind: String, thread: UUID, extraKeys: [String], arguments: [RedisArgument]
    ) async throws(DependencyUnavailable) -> RESPValue {
        let start = ContinuousClock.now
        let span = startSpan("publish \(kind)", ofKind: .producer)
        span.attributes["herald.thread_id"] = thread.text
        defer {
            span.end()
            Self.durations[kind].record(since: start)
        }
        do {
            return try await redis.evalForRequest(script, keys: scriptKeys(thread, extraKeys), arguments: arguments)
        } catch {
            span.recordError(error)
            span.setStatus(.init(code: .error))
            throw error
        }
    }
}
