import Foundation
import HeraldTestSupport
import Testing

/// Streams on Herald's own loops (`StreamLoop`, `PlainStreamListener`): a plain HTTP connection whose first request
/// is a stream of a thread the node watches becomes that stream with no NIO channel. Real Redis, PostgreSQL, demo
/// agent and Herald processes.
@Suite("streams on the stream loops", .serialized, .timeLimit(.minutes(3)))
struct StreamLoopTests {
    @Test("a write-blocked stream is cut without holding up its neighbour, which gets every frame once and in order; a partial stream head is closed by the head clock; every socket is given back")
    func writeBlockedStreamAndHeadClock() async throws {
        let environment = [
            "HERALD_STREAM_QUEUE_FRAMES": "64", "HERALD_STREAM_QUEUE_BYTES": "1048576", "HERALD_HEADER_TIMEOUT_SECONDS": "1",
        ]
        try await withStack(environment: environment) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            // The thread's first stream opens the whole way (its owner from PostgreSQL); the next two on a stream loop.
            let first = try await api.openStream(thread)
            try await first.waitForComment(containing: "connected")
            let fast = try await api.openStream(thread)
            let slow = try await api.openStream(thread, receiveBufferSize: 4096)
            try await fast.waitForComment(containing: "connected")
            try await slow.waitForComment(containing: "connected")
            #expect(try await api.metric("herald_sse_opened_without_pipeline_total") == 2)
            let connectionsBefore = try await api.metric("herald_connections_open")

            // A stream request's head that never ends: closed when the head clock runs out, without an answer.
            let partial = try await RawConnection.open(port: stack.node.port)
            try await partial.send("GET /chats/sse/\(thread) HTTP/1.1\r\nHost: x\r\n")
            #expect(await partial.waitForClose(timeout: .seconds(10)), "the partial head's connection is still open")
            #expect(partial.received.isEmpty, "the partial head got \(partial.received)")

            await slow.connection.pauseReading()
            let sent = try await api.send(thread, "[[silent]] blocked and not")
            _ = try await fast.waitForEvents(count: 3)
            let total = try await DeltaPublisher.floodUntilCut(api: api, run: sent.run, counter: "herald_sse_disconnects_total")
            try await eventually(timeout: .seconds(5), "the fast reader has every delta") {
                fast.events.count >= 3 + total
            }
            // Each once, in the log's order: frames delivered in batches keep their thread's order.
            #expect(mismatch(fast.events.compactMap(\.deltaIndex).sorted(), Array(0..<total)) == nil, "the fast reader missed or repeated deltas")
            let ids = fast.events.map { $0.lastEventID.split(separator: "-").compactMap { Int($0) } }
            #expect(zip(ids, ids.dropFirst()).allSatisfy { $0.lexicographicallyPrecedes($1) }, "the fast reader's frames are out of the log's order")
            #expect(!fast.isEnded, "the fast reader was disconnected: \(fast.endError ?? "")")

            await slow.connection.resumeReading()
            try await slow.waitForEnd(timeout: .seconds(5))
            #expect(slow.events.compactMap(\.deltaIndex).count < total)
            // The cut stream's socket is given back; the partial head's was already.
            try await eventually(timeout: .seconds(5), "the cut stream's connection is closed") {
                try await api.metric("herald_connections_open") == (connectionsBefore ?? 0) - 1
            }
            #expect(try await api.metric("herald_sse_connections") == 2)
        }
    }

    @Test("a reader that stops reading for a while gets its whole backlog once it reads again, every delta once and in order")
    func laggingReaderCatchesUp() async throws {
        // A queue that holds the backlog: the socket's buffers take some 4 MiB, the stream's queue the rest.
        try await withStack(environment: ["HERALD_STREAM_QUEUE_FRAMES": "4096", "HERALD_STREAM_QUEUE_BYTES": "33554432"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let first = try await api.openStream(thread)
            try await first.waitForComment(containing: "connected")
            let lagging = try await api.openStream(thread, receiveBufferSize: 4096)
            try await lagging.waitForComment(containing: "connected")
            #expect(try await api.metric("herald_sse_opened_without_pipeline_total") == 1)
            await lagging.connection.pauseReading()
            let sent = try await api.send(thread, "[[silent]] lagging")
            _ = try await first.waitForEvents(count: 3)

            // 8 MiB of deltas: more than the socket's buffers hold, so the stream loop finds the socket full and has
            // to be told when it takes more.
            let total = 512
            let payload = String(repeating: "x", count: 16 * 1024)
            try await DeltaPublisher.burst(api: api, run: sent.run, indexes: 0..<total, concurrency: 4) { "\($0):\(payload)" }.finish()
            try await first.waitForDelta(total - 1, timeout: .seconds(30))
            #expect(try await api.metric("herald_sse_disconnects_total", label: DeltaPublisher.slowConsumer) == nil)

            await lagging.connection.resumeReading()
            try await eventually(timeout: .seconds(30), "the lagging reader has every delta") {
                lagging.events.compactMap(\.deltaIndex).count >= total
            }
            #expect(mismatch(lagging.events.compactMap(\.deltaIndex).sorted(), Array(0..<total)) == nil, "the lagging reader missed or repeated deltas")
            let ids = lagging.events.map { $0.lastEventID.split(separator: "-").compactMap { Int($0) } }
            #expect(zip(ids, ids.dropFirst()).allSatisfy { $0.lexicographicallyPrecedes($1) }, "the lagging reader's frames are out of order")
            #expect(!lagging.isEnded, "the lagging reader was disconnected: \(lagging.endError ?? "")")
        }
    }
}
