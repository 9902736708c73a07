import Foundation
import HeraldTestSupport
import Testing

@Suite("threads and messages over REST", .serialized, .timeLimit(.minutes(3)))
struct ThreadTests {
    @Test("threads list newest first with a cursor; a thread comes with its messages; messages page with after/limit")
    func pagination() async throws {
        try await withStack { stack in
            let api = stack.api()
            var created: [String] = []
            for index in 0..<5 { created.append(try await api.createThread(title: "t\(index)")) }

            var seen: [String] = []
            var cursor: String?
            repeat {
                let query = "limit=2" + (cursor.map { "&cursor=\($0)" } ?? "")
                let page = try api.json(try await api.request("GET", "/chats?\(query)"))
                let threads = try #require(page["threads"] as? [[String: Any]])
                #expect(threads.count <= 2)
                seen += threads.compactMap { $0["id"] as? String }
                cursor = page["next_cursor"] as? String
            } while cursor != nil
            #expect(seen == created.reversed())

            let thread = created[0]
            for text in ["one", "two", "three"] { _ = try await api.send(thread, "[[silent]] \(text)") }
            let full = try api.json(try await api.request("GET", "/chats/\(thread)"))
            #expect((full["thread"] as? [String: Any])?["title"] as? String == "t0")
            let messages = try #require(full["messages"] as? [[String: Any]])
            #expect(messages.map { $0["content"] as? String } == ["[[silent]] one", "[[silent]] two", "[[silent]] three"])

            let firstID = try #require(messages[0]["id"] as? String)
            let after = try api.json(try await api.request("GET", "/chats/\(thread)/messages?after=\(firstID)&limit=1"))
            #expect((after["messages"] as? [[String: Any]])?.map { $0["content"] as? String } == ["[[silent]] two"])
        }
    }

    @Test("the generic adapter: POST {AGENT_URL} with a callback URL, answered by native webhooks")
    func genericAdapter() async throws {
        try await withStack(environment: ["AGENT_KIND": "generic"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            _ = try await api.send(thread, "generic hello")
            let events = try await stream.waitForEvents(count: 8)
            #expect(events.map(\.type) == [
                "message_update", "run_status", "run_status", "delta", "delta", "delta", "message_update", "run_status",
            ])
            #expect((events[6].object["message"] as? [String: Any])?["content"] as? String == "echo: generic hello")
        }
    }
}
