import Foundation
import NIOCore
import Testing

@testable import HeraldCore

@Suite("SSE frames as WebSocket JSON messages")
struct FrameMessageTests {
    let thread = UUID()

    func messages(_ text: String) throws -> [[String: Any]] {
        try FrameMessage.messages(of: ByteBuffer(string: text), thread: thread).map {
            try #require(try JSONSerialization.jsonObject(with: Data($0)) as? [String: Any])
        }
    }

    @Test("a logged frame keeps its id, event name and data exactly; the thread is named")
    func loggedFrame() throws {
        let delta = StreamEvent.delta(.init(threadID: thread, runID: UUID(), messageID: UUID(), index: 3, delta: "a \"quoted\"\nline"))
        let frame = FrameEncoder.frame(id: "1700000000000-5", body: ByteBuffer(bytes: FrameEncoder.body(of: delta)), allocator: .init())
        let message = try #require(try messages(String(buffer: frame)).first)
        #expect(message["type"] as? String == "event")
        #expect(message["thread_id"] as? String == thread.text)
        #expect(message["id"] as? String == "1700000000000-5")
        #expect(message["event"] as? String == "delta")
        let data = try #require(message["data"] as? [String: Any])
        #expect(data["delta"] as? String == "a \"quoted\"\nline")
        #expect(data["index"] as? Int == 3)
    }

    @Test("several frames in one buffer (a catch-up) make one message each, in order; comments, retry and the preamble none")
    func catchUpAndControlLines() throws {
        let text = FrameEncoder.preamble + FrameEncoder.heartbeat
            + "id: 1-1\nevent: run_status\ndata: {\"n\":1}\n\n"
            + ": a comment\n\n"
            + "event: resync\ndata: {\"n\":2}\n\n"
            + "id: 1-3\ndata: {\"n\":3}\n\n"
        let all = try messages(text)
        #expect(all.map { ($0["data"] as? [String: Any])?["n"] as? Int } == [1, 2, 3])
        #expect(all.map { $0["id"] as? String } == ["1-1", nil, "1-3"])
        // An event without a name is a `message`, as EventSource names it.
        #expect(all.map { $0["event"] as? String } == ["run_status", "resync", "message"])
        #expect(try messages(FrameEncoder.preamble).isEmpty)
    }

    @Test("multi-line data joins with newlines, as the SSE spec reads it")
    func multiLineData() throws {
        let all = try messages("event: x\ndata: [1,\ndata: 2]\n\n")
        #expect(all.first?["data"] as? [Int] == [1, 2])
    }
}
