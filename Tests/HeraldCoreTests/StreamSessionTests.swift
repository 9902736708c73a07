import Foundation
import Logging
import NIOCore
import RedisClient
import Testing

@testable import HeraldCore

/// A live stream's writes, without Redis: a live start never reads the log.
@Suite("stream session: a backlog goes out in one write, in order, each frame once")
struct StreamSessionTests {
    let thread = UUID()

    func frame(_ id: String) -> ByteBuffer {
        FrameEncoder.frame(id: id, body: ByteBuffer(string: "event: delta\ndata: {\"id\":\"\(id)\"}\n\n"), allocator: ByteBufferAllocator())
    }

    func ids(_ buffers: [ByteBuffer]) -> [String] {
        buffers.compactMap { FrameEncoder.frameID(of: $0)?.description }
    }

    func liveSession() -> (StreamConnection, StreamSession) {
        let connection = StreamConnection(id: 1, thread: thread, limits: .init(maxFrames: 1000, maxBytes: 1 << 20)) { _, _ in }
        let replayer = LogReplayer(
            redis: RedisClient(configuration: RedisConfiguration(port: 1), logger: Logger(label: "test")), keys: ThreadKeys(prefix: "t:"),
            logMaxLength: 100
        )
        let session = StreamSession(connection: connection, start: .live, baseline: .zero, replayer: replayer, logger: Logger(label: "test"))
        return (connection, session)
    }

    @Test("queued frames come back together, in order; one already sent is dropped; at most 64 a write")
    func backlogInOneWrite() async throws {
        let (connection, live) = liveSession()
        var session = live
        let preamble = try #require(await session.nextChunks())
        #expect(preamble.count == 1)

        for id in ["5-1", "5-2", "5-3"] { connection.push(frame(id)) }
        #expect(ids(try #require(await session.nextChunks())) == ["5-1", "5-2", "5-3"])

        // A frame a catch-up already sent (id not newer than the last sent) is not sent again.
        for id in ["5-2", "5-4"] { connection.push(frame(id)) }
        #expect(ids(try #require(await session.nextChunks())) == ["5-4"])

        for n in 0..<100 { connection.push(frame("6-\(n)")) }
        let first = ids(try #require(await session.nextChunks()))
        let second = ids(try #require(await session.nextChunks()))
        #expect(first.count == StreamSession.maxFramesPerWrite)
        #expect(first + second == (0..<100).map { "6-\($0)" })

        connection.end(.clientGone)
        #expect(await session.nextChunks() == nil)
    }

    @Test("a backlog stops at a held-back catch-up: frames behind it wait for it")
    func stopsAtCatchUp() {
        let (connection, _) = liveSession()
        connection.push(frame("7-1"))
        connection.push(frame("7-2"))
        connection.pushCatchUp()
        connection.push(frame("7-3"))
        #expect(ids(connection.takeQueuedFrames(limit: 10)) == ["7-1", "7-2"])
        #expect(connection.takeQueuedFrames(limit: 10).isEmpty)
    }
}
