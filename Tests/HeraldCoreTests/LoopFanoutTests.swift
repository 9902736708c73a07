import Foundation
import Logging
import NIOCore
import NIOEmbedded
import RedisClient
import Testing

@testable import HeraldCore

/// The write path on one event loop, without sockets or Redis: what each stream's sink is given, in which
/// writes, and when it is flushed. (Integration tests cover the same over real connections.)
@Suite("loop fan-out: a batch per loop, one flush per stream, in order, a blocked client queues alone")
struct LoopFanoutTests {
    /// What the hub wrote to one client: buffers since the last flush, and each flush's buffers.
    final class RecordingSink: StreamSink {
        var isWritable = true
        var unflushed: [ByteBuffer] = []
        var flushes: [[ByteBuffer]] = []
        var closed = false

        func write(_ frame: OutgoingFrame) { unflushed.append(frame.bytes) }
        func flush() {
            flushes.append(unflushed)
            unflushed = []
        }
        func close() { closed = true }
        /// Frames written and flushed in one call.
        var writtenAndFlushed = 0
        func writeAndFlush(_ frame: OutgoingFrame) {
            writtenAndFlushed += 1
            write(frame)
            flush()
        }

        /// Ids of the frames flushed so far, in order (the preamble and heartbeats have none).
        var flushedIDs: [String] { flushes.joined().compactMap { FrameEncoder.frameID(of: $0)?.description } }
    }

    let loop = EmbeddedEventLoop()
    let fanout: LoopFanout
    let replayer = LogReplayer(
        redis: RedisClient(configuration: RedisConfiguration(port: 1), logger: Logger(label: "test")), keys: ThreadKeys(prefix: "t:"),
        logMaxLength: 100
    )

    init() {
        fanout = LoopFanout(loop: loop, heartbeatInterval: .hours(1))
    }

    func frame(_ id: String, event: String = "delta") -> ByteBuffer {
        FrameEncoder.frame(id: id, body: ByteBuffer(string: "event: \(event)\ndata: {\"id\":\"\(id)\"}\n\n"), allocator: ByteBufferAllocator())
    }

    func post(_ id: String, to channel: String, event: String = "delta") {
        let frame = frame(id, event: event)
        fanout.post(.frame(frame, id: FrameEncoder.frameID(of: frame), channel: channel, endsStreams: event == "thread_deleted"))
    }

    /// A begun, live stream of `channel` on the loop, with its sink.
    func stream(
        _ channel: String, id: UInt64, limits: StreamConnection.Limits = .init(maxFrames: 100, maxBytes: 1 << 20),
        start: StreamConnection.Start = .live
    ) -> (StreamConnection, RecordingSink) {
        let connection = StreamConnection(id: id, thread: UUID(), eventLoop: loop, limits: limits) { [fanout] connection, _ in
            fanout.remove(connection, channel: channel)
        }
        fanout.post(.register(connection, channel: channel, missesFrames: false))
        loop.run()
        let sink = RecordingSink()
        connection.begin(
            sink: sink, .init(start: start, baseline: .zero, heartbeat: .comment, replayer: replayer, logger: Logger(label: "test"))
        )
        return (connection, sink)
    }

    @Test("frames posted together reach each stream of their thread in order, flushed once per stream")
    func batchedInOrder() {
        let (a1, sinkA1) = stream("a", id: 1)
        let (_, sinkA2) = stream("a", id: 2)
        let (_, sinkB) = stream("b", id: 3)
        #expect(sinkA1.flushes.count == 1)  // the preamble
        for n in 1...5 {
            post("1-\(n)", to: "a")
            post("2-\(n)", to: "b")
        }
        loop.run()
        #expect(sinkA1.flushes.count == 2)
        #expect(sinkA1.flushes.last?.count == 5)
        #expect(sinkA1.flushedIDs == (1...5).map { "1-\($0)" })
        #expect(sinkA2.flushedIDs == (1...5).map { "1-\($0)" })
        #expect(sinkB.flushedIDs == (1...5).map { "2-\($0)" })
        // The very buffer the subscriber received goes to every client: no copy per stream.
        let shared = sinkA1.flushes[1][0]
        let other = sinkA2.flushes[1][0]
        #expect(shared.withUnsafeReadableBytes { $0.baseAddress } == other.withUnsafeReadableBytes { $0.baseAddress })
        a1.end(.clientGone)
    }

    @Test("a lone frame goes to each stream in one write-and-flush; a stream with several in the batch is flushed with the last")
    func loneFrameWrittenAndFlushed() {
        let (a, sinkA) = stream("a", id: 1)
        let (_, sinkB) = stream("b", id: 2)
        post("4-1", to: "a")
        loop.run()
        #expect(sinkA.writtenAndFlushed == 1)
        #expect(sinkA.flushedIDs == ["4-1"])
        post("4-2", to: "a")
        post("5-1", to: "b")
        post("4-3", to: "a")
        loop.run()
        // b's only frame of the batch; a's two go out in one flush, with the last.
        #expect(sinkB.writtenAndFlushed == 1)
        #expect(sinkA.writtenAndFlushed == 1)
        #expect(sinkA.flushes.last?.count == 2)
        #expect(sinkA.flushedIDs == ["4-1", "4-2", "4-3"])
        a.end(.clientGone)
    }

    @Test("a client that is not writable queues; the others are written at once; its backlog goes out in one flush")
    func blockedClientQueuesAlone() {
        let (blocked, blockedSink) = stream("a", id: 1)
        let (_, freeSink) = stream("a", id: 2)
        blockedSink.isWritable = false
        for n in 1...10 { post("3-\(n)", to: "a") }
        loop.run()
        #expect(freeSink.flushedIDs == (1...10).map { "3-\($0)" })
        #expect(blockedSink.flushedIDs.isEmpty)
        #expect(blockedSink.unflushed.isEmpty)

        blockedSink.isWritable = true
        blocked.sinkBecameWritable()
        #expect(blockedSink.flushes.count == 2)
        #expect(blockedSink.flushes.last?.count == 10)
        #expect(blockedSink.flushedIDs == (1...10).map { "3-\($0)" })
    }

    @Test("a client whose queue passes the limit is cut as a slow consumer and closed; the others go on")
    func slowConsumerCut() {
        let (slow, slowSink) = stream("a", id: 1, limits: .init(maxFrames: 3, maxBytes: 1 << 20))
        let (_, freeSink) = stream("a", id: 2)
        slowSink.isWritable = false
        for n in 1...4 { post("4-\(n)", to: "a") }
        loop.run()
        #expect(slow.endReason == .slowConsumer)
        #expect(slowSink.closed)
        #expect(freeSink.flushedIDs == (1...4).map { "4-\($0)" })
        post("4-5", to: "a")
        loop.run()
        #expect(freeSink.flushedIDs.last == "4-5")
        #expect(slowSink.flushedIDs.isEmpty)
    }

    @Test("frames that arrive before the stream begins follow its preamble; one not newer than the last sent is dropped")
    func queuedBeforeBeginAndDeduplicated() {
        let connection = StreamConnection(id: 1, thread: UUID(), eventLoop: loop, limits: .init(maxFrames: 100, maxBytes: 1 << 20)) { _, _ in }
        fanout.post(.register(connection, channel: "a", missesFrames: false))
        post("5-1", to: "a")
        post("5-2", to: "a")
        loop.run()
        let sink = RecordingSink()
        connection.begin(
            sink: sink, .init(start: .live, baseline: .zero, heartbeat: .comment, replayer: replayer, logger: Logger(label: "test"))
        )
        #expect(sink.flushes.count == 1)
        #expect(String(buffer: sink.flushes[0][0]) == FrameEncoder.preamble)
        #expect(sink.flushedIDs == ["5-1", "5-2"])
        post("5-2", to: "a")
        post("5-3", to: "a")
        loop.run()
        #expect(sink.flushedIDs == ["5-1", "5-2", "5-3"])
    }

    @Test("while the subscriber is down, live frames wait for the catch-up instead of going out ahead of it")
    func heldForCatchUp() {
        let (connection, sink) = stream("a", id: 1)
        post("6-1", to: "a")
        fanout.post(.subscriberLost(nil))
        post("6-2", to: "a")
        loop.run()
        #expect(sink.flushedIDs == ["6-1"])
        connection.end(.clientGone)
        loop.run()
    }

    @Test("thread_deleted is delivered, then ends the stream; the stream is forgotten by the loop")
    func threadDeletedEnds() {
        let (connection, sink) = stream("a", id: 1)
        post("7-1", to: "a", event: "thread_deleted")
        loop.run()
        #expect(connection.endReason == .threadDeleted)
        #expect(sink.flushedIDs == ["7-1"])
        post("7-2", to: "a")
        loop.run()
        #expect(sink.flushedIDs == ["7-1"])
    }
}
