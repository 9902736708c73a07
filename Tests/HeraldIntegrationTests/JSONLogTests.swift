import Foundation
import HeraldTestSupport
import Testing

@Suite("logs: HERALD_LOG_FORMAT=json", .serialized, .timeLimit(.minutes(2)))
struct JSONLogTests {
    @Test("every line on stderr is one JSON object; request lines carry the request id, route and status")
    func structuredLines() async throws {
        try await withStack(environment: ["HERALD_LOG_FORMAT": "json", "HERALD_LOG_LEVEL": "debug"]) { stack in
            let api = stack.api()
            _ = try await api.createThread()
            #expect(try await api.request("GET", "/chats/not-a-uuid").status == 400)

            var lines: [[String: Any]] = []
            try await eventually("the request lines are written") {
                lines = try stack.node.process.log().split(separator: "\n").map { line in
                    try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
                }
                return lines.contains { $0["route"] as? String == "/chats/{thread_id}" }
            }
            for line in lines {
                #expect(line["time"] is String && line["level"] is String && line["logger"] is String && line["message"] is String, "\(line)")
            }
            #expect(lines.contains { $0["message"] as? String == "herald starting" && $0["level"] as? String == "info" })
            let created = try #require(lines.first { $0["message"] as? String == "request" && $0["route"] as? String == "/chats" })
            #expect(created["method"] as? String == "POST" && created["status"] as? String == "201", "\(created)")
            let refused = try #require(lines.first { $0["route"] as? String == "/chats/{thread_id}" })
            #expect(refused["status"] as? String == "400")
            let ids = [created, refused].compactMap { $0["request_id"] as? String }
            #expect(ids.count == 2 && Set(ids).count == 2, "each request has its own id: \(ids)")
        }
    }

    @Test("text stays the default; an unknown format stops start-up naming the variable")
    func formats() async throws {
        let refused = try ChildProcess.start(
            builtProduct("herald"), ["serve"], environment: ["HERALD_LOG_FORMAT": "xml", "HERALD_INSECURE_DEV": "1"]
        )
        #expect(try await refused.waitForExit(timeout: .seconds(20)) == 2)
        #expect(refused.log().contains("HERALD_LOG_FORMAT"), "\(refused.log())")
        try await withStack { stack in
            let log = stack.node.process.log()
            #expect(log.contains("herald starting") && !log.hasPrefix("{"), "\(log.prefix(300))")
        }
    }
}
