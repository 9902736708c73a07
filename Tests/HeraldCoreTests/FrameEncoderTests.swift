import Foundation
import HeraldTestSupport
import NIOCore
import Testing

@testable import HeraldCore

@Suite("SSE frames, read back with an independent WHATWG parser")
struct FrameEncoderTests {
    let thread = UUID()
    let run = UUID()

    func parse(_ bytes: [UInt8]) -> [SSEItem] {
        var parser = SSEParser()
        return parser.feed(bytes)
    }

    @Test("a delta's JSON, written by hand for speed, is byte for byte what JSONEncoder writes")
    func deltaJSONMatchesJSONEncoder() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        var texts = (0..<0x80).map { String(UnicodeScalar(UInt8($0))) }
        texts += ["", "a/b", #"quote " and \ backslash"#, "é", "😀 emoji", "\u{2028}\u{2029}", "\u{7f}\u{80}", "line\r\nbreak"]
        for (index, text) in texts.enumerated() {
            for cached in [nil, true, false] {
                let delta = StreamEvent.Delta(threadID: thread, runID: run, messageID: UUID(), index: index, delta: text, cached: cached)
                let expected = try encoder.encode(delta)
                #expect(FrameEncoder.json(of: delta) == Array(expected), "\(Array(text.utf8)) cached: \(String(describing: cached))")
                // The halves the delta script puts its index between make the same frame.
                let (beforeIndex, afterIndex) = FrameEncoder.deltaBody(aroundIndexOf: delta)
                #expect(beforeIndex + Array(String(index).utf8) + afterIndex == FrameEncoder.body(of: .delta(delta)))
            }
        }
    }

    @Test("a run status's JSON, written by hand for speed, is byte for byte what JSONEncoder writes")
    func runStatusJSONMatchesJSONEncoder() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        for status in [RunStatus.queued, .running, .completed, .failed, .timedOut] {
            for cached in [nil, true, false] {
                let update = StreamEvent.RunStatusUpdate(threadID: thread, runID: run, status: status, cached: cached)
                #expect(FrameEncoder.json(of: update) == Array(try encoder.encode(update)), "\(status) cached: \(String(describing: cached))")
            }
        }
    }

    @Test("cached is in a frame's JSON only when set: frames of engine runs are unchanged")
    func cachedMarkOnlyWhenSet() {
        let message = ChatMessage(
            id: UUID(), threadID: thread, runID: run, role: .assistant, content: "hi", status: "complete", metadata: .object([:]),
            createdAt: "2026-11-30T19:00:00.000000Z"
        )
        let plain: [StreamEvent] = [
            .messageUpdate(.init(threadID: thread, runID: run, message: message)),
            .delta(.init(threadID: thread, runID: run, messageID: message.id, index: 0, delta: "hi")),
            .runStatus(.init(threadID: thread, runID: run, status: .completed)),
        ]
        let cached: [StreamEvent] = [
            .messageUpdate(.init(threadID: thread, runID: run, message: message, cached: true)),
            .delta(.init(threadID: thread, runID: run, messageID: message.id, index: 0, delta: "hi", cached: true)),
            .runStatus(.init(threadID: thread, runID: run, status: .completed, cached: true)),
        ]
        for event in plain {
            #expect(!String(decoding: FrameEncoder.body(of: event), as: UTF8.self).contains("cached"))
        }
        for event in cached {
            #expect(String(decoding: FrameEncoder.body(of: event), as: UTF8.self).contains(#"{"cached":true,"#))
        }
    }

    @Test("UUID.text is the lowercase uuidString; UUID(text:) reads exactly the canonical form, as UUID(uuidString:) does")
    func uuidText() {
        for _ in 0..<100 {
            let id = UUID()
            #expect(id.text == id.uuidString.lowercased())
            #expect(UUID(text: id.text) == id)
            #expect(UUID(text: id.uuidString) == id)
        }
        let sample = UUID().text
        var candidates = ["", "-", String(sample.dropLast()), sample + "0", sample.replacingOccurrences(of: "-", with: ""),
                          "{\(sample)}", " \(sample)", sample.replacingOccurrences(of: "-", with: "_"), String(repeating: "g", count: 36)]
        for index in sample.indices {
            for replacement in ["g", "-", "0", "é"] where String(sample[index]) != replacement {
                let isDash = sample[index] == "-"
                // A digit for a digit leaves it canonical.
                if !isDash, replacement == "0" { continue }
                var text = sample
                text.replaceSubrange(index...index, with: replacement)
                candidates.append(text)
            }
        }
        // Every one breaks the canonical form (Foundation's sscanf-based parser lets some of them through).
        for text in candidates {
            #expect(UUID(text: text) == nil, "\(text)")
        }
    }

    @Test("a message_update frame parses to one event with one-line JSON data")
    func messageUpdate() throws {
        let message = ChatMessage(
            id: UUID(), threadID: thread, runID: run, role: .assistant, content: "line one\nline two\r\nid: 666\n\nevent: x",
            status: "complete", metadata: .object(["k": .string("v\n")]), createdAt: "2026-11-21T10:00:00.000000Z"
        )
        let body = FrameEncoder.body(of: .messageUpdate(.init(threadID: thread, runID: run, message: message)))
        let frame = FrameEncoder.frame(id: "1732200000000-7", body: ByteBuffer(bytes: body), allocator: .init())
        let items = parse(Array(frame.readableBytesView))
        #expect(items.count == 1)
        guard case .event(let event) = items.first else { Issue.record("no event: \(items)"); return }
        #expect(event.type == "message_update")
        #expect(event.lastEventID == "1732200000000-7")
        #expect(!event.data.contains("\n"))
        let decoded = try JSONSerialization.jsonObject(with: Data(event.data.utf8)) as? [String: Any]
        let decodedMessage = decoded?["message"] as? [String: Any]
        #expect(decodedMessage?["content"] as? String == message.content)
        #expect(decoded?["thread_id"] as? String == thread.text)
    }

    @Test("every event name is one of the fixed set, and frames end with a blank line", arguments: [
        StreamEvent.delta(.init(threadID: UUID(), runID: UUID(), messageID: UUID(), index: 3, delta: "tok\u{0}en\u{2028}")),
        .runStatus(.init(threadID: UUID(), runID: UUID(), status: .timedOut)),
        .error(.init(threadID: UUID(), runID: UUID(), error: .init(code: "c", message: "m\r\n: injected"))),
        .threadDeleted(.init(threadID: UUID())),
        .resync(.init(threadID: UUID(), reason: "log_trimmed")),
    ])
    func eventNames(event: StreamEvent) throws {
        let body = FrameEncoder.body(of: event)
        #expect(body.suffix(2) == Array("\n\n".utf8))
        #expect(body.filter { $0 == UInt8(ascii: "\n") }.count == 3)
        let items = parse(body)
        guard items.count == 1, case .event(let parsed) = items[0] else { Issue.record("\(items)"); return }
        #expect(parsed.type == event.name.rawValue)
        #expect(StreamEventName(rawValue: parsed.type) != nil)
        #expect(try JSONSerialization.jsonObject(with: Data(parsed.data.utf8)) is [String: Any])
    }

    @Test("frame id and event name are read back from complete frames")
    func frameHeaders() {
        let body = FrameEncoder.body(of: .threadDeleted(.init(threadID: thread)))
        let frame = FrameEncoder.frame(id: "5-2", body: ByteBuffer(bytes: body), allocator: .init())
        #expect(FrameEncoder.frameID(of: frame) == StreamID(milliseconds: 5, sequence: 2))
        #expect(FrameEncoder.eventName(of: frame) == "thread_deleted")
        #expect(FrameEncoder.frameID(of: ByteBuffer(bytes: body)) == nil)
    }

    @Test("preamble and heartbeat are comments plus a retry field")
    func preamble() {
        var parser = SSEParser()
        let items = parser.feed(Array((FrameEncoder.preamble + FrameEncoder.heartbeat).utf8))
        #expect(items == [.comment("connected"), .comment("heartbeat")])
        #expect(parser.retry == 3000)
    }

    @Test("a heartbeat event is an event EventSource dispatches, with the interval and no id")
    func heartbeatEvent() {
        var parser = SSEParser()
        let items = parser.feed(Array(("id: 7-1\nevent: delta\ndata: {}\n\n" + FrameEncoder.heartbeatEvent(intervalSeconds: 0.5)).utf8))
        #expect(items.last == .event(SSEEvent(type: "heartbeat", data: #"{"interval_seconds":0.5}"#, lastEventID: "7-1")))
    }
}

@Suite("stream ids")
struct StreamIDTests {
    @Test func parsing() {
        #expect(StreamID("1732200000000-3") == StreamID(milliseconds: 1_732_200_000_000, sequence: 3))
        #expect(StreamID("0") == .zero)
        #expect(StreamID("42") == StreamID(milliseconds: 42, sequence: 0))
        for bad in ["", "-", "1-", "-1", "a-1", "1-2-3", "1 -2", "99999999999999999999-1", "1-0x1", "１-2"] {
            #expect(StreamID(bad) == nil, "\(bad)")
        }
    }

    @Test func ordering() {
        #expect(StreamID("1-5")! < StreamID("2-0")!)
        #expect(StreamID("2-1")! < StreamID("2-10")!)
        #expect(!(StreamID("3-0")! < StreamID("3")!))
    }
}
