import Foundation
import HeraldTestSupport
import Testing

@Suite("bad input gets a 4xx JSON error and changes nothing", .serialized, .timeLimit(.minutes(3)))
struct BadInputTests {
    struct Case: Sendable, CustomStringConvertible {
        let name: String
        let method: String
        let path: String
        let contentType: String?
        let body: [UInt8]?
        let status: Int
        var description: String { name }
    }

    @Test("table of bad requests")
    func badRequests() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            _ = try await api.send(thread, "[[silent]] the only message")
            let unknown = UUID().uuidString.lowercased()
            let json = "application/json"
            let cases: [Case] = [
                .init(name: "malformed JSON", method: "POST", path: "/chats/\(thread)/send", contentType: json, body: Array(#"{"content": "#.utf8), status: 400),
                .init(name: "empty body", method: "POST", path: "/chats/\(thread)/send", contentType: json, body: [], status: 400),
                .init(name: "JSON array", method: "POST", path: "/chats/\(thread)/send", contentType: json, body: Array("[1,2]".utf8), status: 422),
                .init(name: "content wrong type", method: "POST", path: "/chats/\(thread)/send", contentType: json, body: Array(#"{"content": 42}"#.utf8), status: 422),
                .init(name: "content missing", method: "POST", path: "/chats/\(thread)/send", contentType: json, body: Array(#"{"text": "hi"}"#.utf8), status: 422),
                .init(name: "empty content", method: "POST", path: "/chats/\(thread)/send", contentType: json, body: Array(#"{"content": "  "}"#.utf8), status: 422),
                .init(name: "metadata wrong type", method: "POST", path: "/chats/\(thread)/send", contentType: json, body: Array(#"{"content": "x", "metadata": [1]}"#.utf8), status: 422),
                .init(name: "wrong content type", method: "POST", path: "/chats/\(thread)/send", contentType: "text/xml", body: Array("<a/>".utf8), status: 415),
                .init(name: "oversized body", method: "POST", path: "/chats/\(thread)/send", contentType: json, body: Array(#"{"content": ""#.utf8) + Array(repeating: UInt8(ascii: "a"), count: 2 << 20) + Array(#""}"#.utf8), status: 413),
                .init(name: "unknown thread send", method: "POST", path: "/chats/\(unknown)/send", contentType: json, body: Array(#"{"content": "hi"}"#.utf8), status: 404),
                .init(name: "non-UUID thread send", method: "POST", path: "/chats/not-a-uuid/send", contentType: json, body: Array(#"{"content": "hi"}"#.utf8), status: 400),
                .init(name: "unknown thread get", method: "GET", path: "/chats/\(unknown)", contentType: nil, body: nil, status: 404),
                .init(name: "non-UUID thread get", method: "GET", path: "/chats/..%2F..%2Fetc", contentType: nil, body: nil, status: 400),
                .init(name: "unknown thread delete", method: "DELETE", path: "/chats/\(unknown)", contentType: nil, body: nil, status: 404),
                .init(name: "non-UUID stream", method: "GET", path: "/chats/sse/1%20OR%201=1", contentType: nil, body: nil, status: 400),
                .init(name: "bad limit", method: "GET", path: "/chats/\(thread)/messages?limit=-5", contentType: nil, body: nil, status: 422),
                .init(name: "bad after", method: "GET", path: "/chats/\(thread)/messages?after=zzz", contentType: nil, body: nil, status: 422),
                .init(name: "title wrong type", method: "POST", path: "/chats", contentType: json, body: Array(#"{"title": {"a": 1}}"#.utf8), status: 422),
                .init(name: "webhook not JSON", method: "POST", path: "/webhook/chat-response", contentType: "text/plain", body: Array("hello".utf8), status: 400),
                .init(name: "webhook unknown shape", method: "POST", path: "/webhook/chat-response", contentType: json, body: Array(#"{"hello": "world"}"#.utf8), status: 422),
                .init(name: "webhook unknown run", method: "POST", path: "/webhook/chat-response", contentType: json, body: Array(#"{"run_id": "\#(unknown)", "event": "completed", "content": "x"}"#.utf8), status: 404),
                .init(name: "webhook non-UUID run", method: "POST", path: "/webhook/chat-response", contentType: json, body: Array(#"{"run_id": "r1", "event": "completed", "content": "x"}"#.utf8), status: 422),
                .init(name: "webhook wrong delta type", method: "POST", path: "/webhook/chat-response", contentType: json, body: Array(#"{"run_id": "\#(unknown)", "event": "delta", "delta": 5}"#.utf8), status: 422),
                .init(name: "webhook bad event", method: "POST", path: "/webhook/chat-response", contentType: json, body: Array(#"{"run_id": "\#(unknown)", "event": "explode"}"#.utf8), status: 422),
                .init(name: "unknown route", method: "GET", path: "/nope", contentType: nil, body: nil, status: 404),
            ]
            for testCase in cases {
                var headers: [(String, String)] = []
                if let contentType = testCase.contentType { headers.append(("Content-Type", contentType)) }
                // Webhooks are signed like a real engine's, so what is judged is the body, not the credential.
                let response = testCase.path == "/webhook/chat-response"
                    ? try await api.postWebhook(testCase.body ?? [], contentType: testCase.contentType ?? "application/json")
                    : try await api.request(testCase.method, testCase.path, headers: headers, body: testCase.body)
                #expect(response.status == testCase.status, "\(testCase.name): \(response.status) \(response.text.prefix(300))")
                let error = (try? api.json(response))?["error"] as? [String: Any]
                #expect(error?["code"] is String && error?["message"] is String, "\(testCase.name): \(response.text.prefix(300))")
            }
            // Nothing was stored and the process is still up.
            #expect(try await api.messages(thread).map { $0["content"] as? String } == ["[[silent]] the only message"])
            #expect(stack.node.process.isRunning)
        }
    }

    @Test("a bad setting stops start-up with one line naming it")
    func badConfiguration() async throws {
        let process = try ChildProcess.start(builtProduct("herald"), ["serve"], environment: ["HERALD_PORT": "eighty"])
        let status = try await process.waitForExit(timeout: .seconds(10))
        #expect(status == 2)
        let lines = process.log().split(separator: "\n")
        #expect(lines.count == 1, "\(lines)")
        #expect(lines.first?.contains("HERALD_PORT") == true)
    }
}
