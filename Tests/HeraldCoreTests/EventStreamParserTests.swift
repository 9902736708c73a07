import Foundation
import HeraldTestSupport
import Testing

@testable import HeraldCore

@Suite("event stream parser")
struct EventStreamParserTests {
    func parse(_ pieces: [[UInt8]]) throws -> [ServerSentEvent] {
        var parser = EventStreamParser()
        return try pieces.flatMap { try parser.feed($0) }
    }

    func parse(_ text: String) throws -> [ServerSentEvent] {
        try parse([Array(text.utf8)])
    }

    @Test("the HTML standard's examples: multi-line data, ids that carry over, empty data, comments")
    func standardExamples() throws {
        #expect(try parse(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n") == [
            ServerSentEvent(type: "message", data: "first event", lastEventID: "1"),
            ServerSentEvent(type: "message", data: "second event", lastEventID: ""),
            ServerSentEvent(type: "message", data: " third event", lastEventID: ""),
        ])
        #expect(try parse("data\n\ndata\ndata\n\ndata:\n") == [
            ServerSentEvent(type: "message", data: "", lastEventID: ""),
            ServerSentEvent(type: "message", data: "\n", lastEventID: ""),
        ])
        #expect(try parse("data:test\n\ndata: test\n\n").map(\.data) == ["test", "test"])
        #expect(try parse("event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\ndata: 113411\n\n").map(\.type) == [
            "add", "remove", "message",
        ])
    }

    @Test("CR, LF and CRLF all end lines; a BOM at the start is dropped; an unfinished event is not dispatched")
    func lineEndingsAndBOM() throws {
        let events = try parse("\u{FEFF}data: a\r\rdata: b\r\n\r\nid: 7\ndata: c\n\ndata: unfinished\n")
        #expect(events == [
            ServerSentEvent(type: "message", data: "a", lastEventID: ""),
            ServerSentEvent(type: "message", data: "b", lastEventID: ""),
            ServerSentEvent(type: "message", data: "c", lastEventID: "7"),
        ])
        #expect(try parse("data: \u{FEFF}kept\n\n").map(\.data) == ["\u{FEFF}kept"])
    }

    @Test("pieces cut anywhere, even between CR and LF or inside UTF-8, give the same events")
    func anySplit() throws {
        let stream = Array("\u{FEFF}event: messages\r\ndata: [\"héllo 👋\"]\r\nid: 1-0\r\n\r\n: ping\r\n\r\ndata: x\ry\r\r".utf8)
        let whole = try parse([stream])
        #expect(whole.count == 2)
        #expect(try parse(stream.map { [$0] }) == whole)
        for cut in 0...stream.count {
            #expect(try parse([Array(stream[..<cut]), Array(stream[cut...])]) == whole, "cut at \(cut)")
        }
    }

    @Test("a real LangGraph run stream reads the same as with the tests' own spec parser")
    func realLangGraphStream() throws {
        let bytes = try fixture("langgraph-run-stream.txt")
        var reference = SSEParser()
        let expected = reference.feed(bytes).compactMap { item -> ServerSentEvent? in
            guard case .event(let event) = item else { return nil }
            return ServerSentEvent(type: event.type, data: event.data, lastEventID: event.lastEventID)
        }
        #expect(expected.count == 24)
        // In pieces of 97 bytes, as a network would cut them.
        let pieces = stride(from: 0, to: bytes.count, by: 97).map { Array(bytes[$0..<min($0 + 97, bytes.count)]) }
        #expect(try parse(pieces) == expected)
    }

    @Test("an event larger than the bound is refused instead of buffered")
    func boundedEvent() throws {
        var parser = EventStreamParser(maxEventBytes: 64)
        #expect(try parser.feed(Array("data: short\n\n".utf8)).count == 1)
        #expect(throws: EventStreamParser.EventTooLarge.self) {
            _ = try parser.feed([UInt8](repeating: UInt8(ascii: "a"), count: 100))
        }
    }
}
