import Foundation
import HeraldCore
import Logging
import Synchronization
import Testing

@Suite("JSONLogHandler: one parseable JSON object per line")
struct JSONLogHandlerTests {
    final class Lines: Sendable {
        let written = Mutex<[String]>([])
    }

    func logger(_ lines: Lines, provider: Logger.MetadataProvider? = nil) -> Logger {
        Logger(label: "herald.test") { label in
            var handler = JSONLogHandler(label: label, metadataProvider: provider) { line in lines.written.withLock { $0.append(line) } }
            handler.logLevel = .debug
            return handler
        }
    }

    @Test("fixed keys, metadata of every shape, hb.request.id as request_id, hostile text escaped")
    func fields() throws {
        let lines = Lines()
        var logger = logger(lines, provider: Logger.MetadataProvider { ["trace_id": "abc"] })
        logger[metadataKey: "hb.request.id"] = "req-1"
        let hostile = "quote \" backslash \\ newline \n tab \t bell \u{07} emoji 🙂"
        logger.warning("\(hostile)", metadata: [
            "count": .stringConvertible(3), "list": .array(["a", .dictionary(["k": "v"])]), "text": .string(hostile),
        ])
        let written = lines.written.withLock { $0 }
        #expect(written.count == 1)
        let line = try #require(written.first)
        #expect(line.hasSuffix("}\n") && line.dropLast().firstIndex(of: "\n") == nil, "one line: \(line)")
        #expect(line.hasPrefix(#"{"time":""#))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["level"] as? String == "warning")
        #expect(object["logger"] as? String == "herald.test")
        #expect(object["message"] as? String == hostile)
        #expect(object["text"] as? String == hostile)
        #expect(object["count"] as? String == "3")
        #expect((object["list"] as? [Any])?.count == 2)
        #expect(object["request_id"] as? String == "req-1")
        #expect(object["hb.request.id"] == nil)
        #expect(object["trace_id"] as? String == "abc")
        let time = try #require(object["time"] as? String)
        #expect(try Date(time, strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true)) <= Date.now)
    }

    @Test("below the level nothing is written")
    func level() {
        let lines = Lines()
        var logger = logger(lines)
        logger.logLevel = .info
        logger.debug("hidden")
        logger.info("shown")
        #expect(lines.written.withLock { $0.count } == 1)
    }
}
