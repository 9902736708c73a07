import Foundation
import Logging
import NIOCore

/// What one SSE response sends, in order: the preamble, the catch-up from the log, then live frames, each frame
/// exactly once. Transport-agnostic: the HTTP layer writes whatever `nextChunks()` returns.
///
/// Gapless resume: the connection is subscribed before the log is read, so frames published during the
/// catch-up wait in the queue; afterwards, queued frames the catch-up already sent (id ≤ last sent) are dropped.
public struct StreamSession: Sendable {
    /// Where the client says it is.
    public enum Start: Sendable, Equatable {
        /// No `Last-Event-ID`: live from now.
        case live
        /// Resume after this id (`0-0`: everything the log holds).
        case after(StreamID)
        /// The client sent an id that is not a stream id: tell it to refetch, then go live.
        case malformed
    }

    /// How heartbeats are written.
    public enum Heartbeat: Sendable, Equatable {
        /// `: heartbeat`, which keeps proxies from closing an idle stream.
        case comment
        /// `event: heartbeat` with the interval, also sent right after connecting, so that a browser can tell a
        /// stale connection (no frame or heartbeat for a while) from a quiet thread.
        case event(intervalSeconds: Double)
    }

    public let connection: StreamConnection
    private let replayer: LogReplayer
    private let logger: Logger
    private var start: Start?
    /// The newest id sent; live frames at or below it were already sent by a catch-up.
    private var lastSentID: StreamID?
    /// Where a catch-up starts when nothing has been sent yet: the log's newest id when the stream opened.
    private let baseline: StreamID
    private var preambleSent = false
    private let heartbeat: Heartbeat
    private let heartbeatText: String

    public init(
        connection: StreamConnection, start: Start, baseline: StreamID, replayer: LogReplayer, logger: Logger,
        heartbeat: Heartbeat = .comment
    ) {
        self.connection = connection
        self.start = start
        self.heartbeat = heartbeat
        self.heartbeatText = switch heartbeat {
        case .comment: FrameEncoder.heartbeat
        case .event(let intervalSeconds): FrameEncoder.heartbeatEvent(intervalSeconds: intervalSeconds)
        }
        self.baseline = baseline
        self.replayer = replayer
        self.logger = logger
    }

    /// Live frames taken in one go: a stream behind by more sends them over several writes.
    static let maxFramesPerWrite = 64

    /// Buffers to write next, in order and in one write, or nil when the stream is over. Frames stay the buffers
    /// every subscriber shares: a backlog goes out as one write of many buffers, never copied into one.
    public mutating func nextChunks() async -> [ByteBuffer]? {
        if !preambleSent {
            preambleSent = true
            var buffer = ByteBuffer(string: FrameEncoder.preamble)
            if case .event = heartbeat { buffer.writeString(heartbeatText) }
            if let start {
                self.start = nil
                var initial = await initialFrames(for: start)
                buffer.writeBuffer(&initial)
            }
            return [buffer]
        }
        while let item = await connection.next() {
            switch item {
            case .frame(let frame):
                var frames = isNew(frame) ? [frame] : []
                for queued in connection.takeQueuedFrames(limit: Self.maxFramesPerWrite - 1) where isNew(queued) {
                    frames.append(queued)
                }
                if !frames.isEmpty { return frames }
            case .heartbeat:
                return [ByteBuffer(string: heartbeatText)]
            case .catchUp:
                let frames = await catchUp(after: lastSentID ?? baseline, seenByClient: false)
                if frames.readableBytes > 0 { return [frames] }
            }
        }
        return nil
    }

    /// Whether a live frame is still to be sent; every id sent counts, live ones too, so a later catch-up starts
    /// after the newest id sent and queued frames a catch-up already sent are dropped.
    private mutating func isNew(_ frame: ByteBuffer) -> Bool {
        guard let id = FrameEncoder.frameID(of: frame) else { return true }
        if let lastSentID, id <= lastSentID { return false }
        lastSentID = id
        return true
    }

    private mutating func initialFrames(for start: Start) async -> ByteBuffer {
        switch start {
        case .live:
            return ByteBuffer()
        case .malformed:
            return resyncFrame(latestID: nil, reason: "malformed_last_event_id")
        case .after(let seen):
            lastSentID = seen
            return await catchUp(after: seen, seenByClient: true)
        }
    }

    /// Reads the log after `seen` until it succeeds or the connection ends; Redis may be coming back.
    private mutating func catchUp(after seen: StreamID, seenByClient: Bool) async -> ByteBuffer {
        var delay: Duration = .milliseconds(100)
        while connection.endReason == nil {
            do {
                switch try await replayer.frames(of: connection.thread, after: seen, seenByClient: seenByClient) {
                case .frames(let frames, let lastID):
                    if let lastID { lastSentID = max(lastSentID ?? lastID, lastID) }
                    var buffer = ByteBuffer()
                    for var frame in frames { buffer.writeBuffer(&frame) }
                    return buffer
                case .gap(let latestID):
                    if let latestID { lastSentID = max(lastSentID ?? latestID, latestID) }
                    return resyncFrame(latestID: latestID, reason: "log_trimmed")
                }
            } catch {
                logger.warning("catch-up read failed; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
        return ByteBuffer()
    }

    private func resyncFrame(latestID: StreamID?, reason: String) -> ByteBuffer {
        let body = ByteBuffer(bytes: FrameEncoder.body(of: .resync(.init(threadID: connection.thread, reason: reason))))
        guard let latestID else { return body }
        return FrameEncoder.frame(id: latestID.description, body: body, allocator: ByteBufferAllocator())
    }
}
