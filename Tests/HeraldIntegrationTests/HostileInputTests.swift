import Foundation
import HeraldTestSupport
import Testing

@Suite("hostile input: a 4xx each, the process stays up, stored data unchanged", .serialized, .timeLimit(.minutes(3)))
struct HostileInputTests {
    struct Case: Sendable {
        let name: String
        let method: String
        let path: String
        let body: [UInt8]?
        var contentType = "application/json"
        var signedWebhook = false
        let status: Int
    }

    static func nested(_ depth: Int) -> String {
        String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
    }

    @Test("table of hostile requests")
    func hostileRequests() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread(title: "kept")
            let sent = try await api.send(thread, "[[silent]] the only message")
            func snapshot() async throws -> String {
                let threads = try await api.request("GET", "/chats").text
                let messages = try await api.request("GET", "/chats/\(thread)/messages").text
                return threads + "\n" + messages
            }
            let before = try await snapshot()
            let send = "/chats/\(thread)/send"
            let tenMiB = Array(#"{"content":""#.utf8) + Array(repeating: UInt8(ascii: "x"), count: 10 << 20) + Array(#""}"#.utf8)
            let cases: [Case] = [
                .init(name: "truncated JSON", method: "POST", path: send, body: Array(#"{"content":"hel"#.utf8), status: 400),
                .init(name: "invalid UTF-8", method: "POST", path: send, body: [0x7B, 0x22, 0x63, 0x22, 0x3A, 0x22, 0xC3, 0x28, 0x22, 0x7D], status: 400),
                .init(name: "huge number as content", method: "POST", path: send, body: Array(#"{"content":1e99999}"#.utf8), status: 400),
                .init(name: "deeply nested arrays", method: "POST", path: send, body: Array(#"{"content":"x","metadata":{"a":\#(Self.nested(5000))}}"#.utf8), status: 422),
                .init(name: "10 MiB body", method: "POST", path: send, body: tenMiB, status: 413),
                .init(name: "NUL in content", method: "POST", path: send, body: Array(#"{"content":"a\u0000b"}"#.utf8), status: 422),
                .init(name: "NUL in metadata key", method: "POST", path: "/chats", body: Array(#"{"metadata":{"a\u0000":1}}"#.utf8), status: 422),
                .init(name: "CR/LF in the thread id", method: "POST", path: "/chats/abc%0D%0Aevent:%20x/send", body: Array(#"{"content":"x"}"#.utf8), status: 400),
                .init(name: "SQL in the thread id", method: "GET", path: "/chats/'%3B%20DROP%20TABLE%20threads%3B--", body: nil, status: 400),
                .init(name: "SQL in after", method: "GET", path: "/chats/\(thread)/messages?after='%20OR%20'1'='1", body: nil, status: 422),
                .init(name: "SQL in cursor", method: "GET", path: "/chats?cursor='%20OR%201=1--", body: nil, status: 422),
                .init(name: "path traversal in the id", method: "GET", path: "/chats/..%2F..%2Fetc%2Fpasswd/messages", body: nil, status: 400),
                .init(name: "traversal in the stream id", method: "GET", path: "/chats/sse/..%2F..%2Fsse:thread:x", body: nil, status: 400),
                .init(name: "unknown field", method: "POST", path: send, body: Array(#"{"content":"x","role":"assistant"}"#.utf8), status: 422),
                .init(name: "content over the limit", method: "POST", path: send, body: Array(#"{"content":"\#(String(repeating: "y", count: 70_000))"}"#.utf8), status: 422),
                .init(name: "webhook truncated", method: "POST", path: "/webhook/chat-response", body: Array(#"{"run_id":"#.utf8), signedWebhook: true, status: 400),
                .init(name: "webhook NUL", method: "POST", path: "/webhook/chat-response", body: Array(#"{"run_id":"\#(sent.run)","event":"completed","content":"\u0000"}"#.utf8), signedWebhook: true, status: 422),
                .init(name: "webhook nested", method: "POST", path: "/webhook/chat-response", body: Array(#"{"run_id":"\#(sent.run)","event":"completed","content":\#(Self.nested(3000))}"#.utf8), signedWebhook: true, status: 422),
                .init(name: "webhook 10 MiB", method: "POST", path: "/webhook/chat-response", body: tenMiB, signedWebhook: true, status: 413),
                .init(name: "webhook huge index", method: "POST", path: "/webhook/chat-response", body: Array(#"{"run_id":"\#(sent.run)","event":"delta","delta":"x","index":1e300}"#.utf8), signedWebhook: true, status: 422),
            ]
            for testCase in cases {
                let response: TestHTTPResponse
                do {
                    response = testCase.signedWebhook
                        ? try await api.postWebhook(testCase.body ?? [], contentType: testCase.contentType)
                        : try await api.request(testCase.method, testCase.path, headers: [("Content-Type", testCase.contentType)], body: testCase.body)
                } catch {
                    Issue.record("\(testCase.name): \(error)")
                    continue
                }
                #expect(response.status == testCase.status, "\(testCase.name): \(response.status) \(response.text.prefix(200))")
                let error = (try? api.json(response))?["error"] as? [String: Any]
                #expect(error?["code"] is String, "\(testCase.name): \(response.text.prefix(200))")
            }
            // An oversized header block is refused by the HTTP parser.
            let bigHeader = try await api.request("GET", "/chats", headers: [("X-Junk", String(repeating: "j", count: 200_000))])
            #expect((400..<500).contains(bigHeader.status))

            #expect(stack.node.process.isRunning)
            #expect(try await snapshot() == before)
        }
    }

    @Test("CR, LF and NUL-free control characters in content cannot add lines to a frame")
    func frameInjection() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let hostile = "line\r\nevent: thread_deleted\ndata: {}\r\rid: 9999999999999-0\n\n: comment\u{2028}"
            _ = try await api.send(thread, "[[silent]] " + hostile)
            let events = try await stream.waitForEvents(count: 3)
            #expect(events.map(\.type) == ["message_update", "run_status", "run_status"])
            #expect((events[0].object["message"] as? [String: Any])?["content"] as? String == "[[silent]] " + hostile)
            #expect(!events.contains { $0.lastEventID == "9999999999999-0" })
            let messages = try await api.messages(thread)
            #expect(messages.first?["content"] as? String == "[[silent]] " + hostile)
        }
    }
}
