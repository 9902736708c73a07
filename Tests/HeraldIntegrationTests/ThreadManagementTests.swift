import Foundation
import HeraldTestSupport
import Testing

@Suite("batch delete, delete empty threads, rename", .serialized, .timeLimit(.minutes(3)))
struct ThreadManagementTests {
    @Test("batch delete removes only the caller's threads; another user's is reported not found, like a missing one")
    func batchDeleteAcrossOwners() async throws {
        try await withStack { stack in
            let alice = stack.api(user: "alice"), bob = stack.api(user: "bob")
            let first = try await alice.createThread(title: "first"), second = try await alice.createThread(title: "second")
            let withMessages = try await alice.createThread(title: "with messages")
            _ = try await alice.send(withMessages, "[[silent]] keep me busy")
            let kept = try await alice.createThread(title: "not asked for")
            let bobs = try await bob.createThread(title: "bob's")
            let missing = UUID().uuidString.lowercased()
            let stream = try await alice.connectedStream(first), bobsStream = try await bob.connectedStream(bobs)

            // Duplicates count once; an uppercase id is the same id.
            let ids = [first, bobs, second, missing, first, withMessages.uppercased()]
            let response = try await alice.request("POST", "/chats/batch-delete", json: #"{"ids":\#(try jsonArray(ids))}"#)
            #expect(response.status == 200, "\(response.text)")
            let answer = try alice.json(response)
            #expect(answer["deleted"] as? [String] == [first, second, withMessages])
            #expect(answer["not_found"] as? [String] == [bobs, missing])

            let events = try await stream.waitForEvents(count: 1)
            #expect(events[0].type == "thread_deleted")
            #expect(events[0].object["thread_id"] as? String == first)
            try await stream.waitForEnd(timeout: .seconds(5))
            for thread in [first, second, withMessages] {
                #expect(try await alice.request("GET", "/chats/\(thread)").status == 404, "\(thread)")
            }
            #expect(try await alice.request("GET", "/chats/\(kept)").status == 200)
            #expect(try await bob.request("GET", "/chats/\(bobs)").status == 200)
            // Bob's stream saw nothing: his thread was never touched.
            try await Task.sleep(for: .milliseconds(300))
            #expect(bobsStream.events.isEmpty && !bobsStream.isEnded)

            // The same list again: nothing left to delete.
            let again = try alice.json(try await alice.request("POST", "/chats/batch-delete", json: #"{"ids":["\#(first)"]}"#))
            #expect(again["deleted"] as? [String] == [])
            #expect(again["not_found"] as? [String] == [first])
            await bobsStream.connection.closeGracefully()
        }
    }

    @Test("batch delete refuses bad input with a 4xx JSON error and deletes nothing")
    func batchDeleteBadInput() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let tooMany = try jsonArray((0...100).map { _ in UUID().uuidString.lowercased() })
            let cases: [(name: String, body: String, status: Int, code: String, mentions: String?)] = [
                ("malformed JSON", #"{"ids": ["#, 400, "malformed_request", nil),
                ("empty body", "", 400, "malformed_request", nil),
                ("no ids", "{}", 422, "invalid_request", "ids"),
                ("ids not an array", #"{"ids": "\#(thread)"}"#, 422, "invalid_request", "ids"),
                ("an id not a string", #"{"ids": ["\#(thread)", 7]}"#, 422, "invalid_request", "ids[1]"),
                ("an id not a UUID", #"{"ids": ["\#(thread)", "1 OR 1=1"]}"#, 400, "invalid_id", "ids[1]"),
                ("101 ids", #"{"ids": \#(tooMany)}"#, 422, "invalid_request", "100"),
                ("unknown field", #"{"ids": ["\#(thread)"], "force": true}"#, 422, "invalid_request", "force"),
                ("a JSON array", #"["\#(thread)"]"#, 422, "invalid_request", nil),
            ]
            for testCase in cases {
                let response = try await api.request("POST", "/chats/batch-delete", json: testCase.body)
                #expect(response.status == testCase.status, "\(testCase.name): \(response.text)")
                #expect(api.errorCode(response) == testCase.code, "\(testCase.name): \(response.text)")
                if let mentions = testCase.mentions {
                    #expect(response.text.contains(mentions), "\(testCase.name): \(response.text)")
                }
            }
            let notJSON = try await api.request("POST", "/chats/batch-delete", headers: [("Content-Type", "text/plain")], body: Array("x".utf8))
            #expect(notJSON.status == 415)
            let anonymous = API(stack.url, token: nil)
            #expect(try await anonymous.request("POST", "/chats/batch-delete", json: #"{"ids": ["\#(thread)"]}"#).status == 401)

            // An empty list is a request that deletes nothing.
            let empty = try await api.request("POST", "/chats/batch-delete", json: #"{"ids": []}"#)
            #expect(empty.status == 200)
            #expect(empty.text == #"{"deleted":[],"not_found":[]}"#)
            // Exactly 100 ids are taken.
            let hundred = try await api.request(
                "POST", "/chats/batch-delete", json: #"{"ids": \#(try jsonArray([thread] + (1..<100).map { _ in UUID().uuidString }))}"#
            )
            #expect(hundred.status == 200, "\(hundred.text)")
            #expect((try api.json(hundred)["not_found"] as? [String])?.count == 99)
            #expect(try api.json(hundred)["deleted"] as? [String] == [thread])
            #expect(stack.node.process.isRunning)
        }
    }

    @Test("DELETE /chats/empty deletes the caller's threads without messages; the literal route wins over /chats/{thread_id}")
    func deleteEmptyThreads() async throws {
        try await withStack { stack in
            let alice = stack.api(user: "alice"), bob = stack.api(user: "bob")
            let older = try await alice.createThread(title: "empty, older")
            let used = try await alice.createThread(title: "has a message")
            _ = try await alice.send(used, "[[silent]] a message")
            let newer = try await alice.createThread(title: "empty, newer")
            let bobsEmpty = try await bob.createThread(title: "bob's empty")
            let stream = try await alice.connectedStream(older)

            let response = try await alice.request("DELETE", "/chats/empty")
            #expect(response.status == 200, "\(response.text)")
            let answer = try alice.json(response)
            #expect(answer["deleted"] as? [String] == [newer, older])
            #expect(answer["count"] as? Int == 2)
            let events = try await stream.waitForEvents(count: 1)
            #expect(events.map(\.type) == ["thread_deleted"])
            try await stream.waitForEnd(timeout: .seconds(5))

            #expect(try await alice.messages(used).map { $0["content"] as? String } == ["[[silent]] a message"])
            #expect(try await bob.request("GET", "/chats/\(bobsEmpty)").status == 200)
            let remaining = try alice.json(try await alice.request("GET", "/chats"))["threads"] as? [[String: Any]]
            #expect(remaining?.compactMap { $0["id"] as? String } == [used])

            let again = try await alice.request("DELETE", "/chats/empty")
            #expect(again.status == 200)
            #expect(again.text == #"{"count":0,"deleted":[]}"#)
            // The literal path is no thread id: other methods on it are not routes; a UUID still reaches its thread.
            #expect(try await alice.request("GET", "/chats/empty").status == 404)
            #expect(try await alice.request("DELETE", "/chats/\(used)").status == 204)
            #expect(try await alice.request("DELETE", "/chats/not-a-uuid").status == 400)
        }
    }

    @Test("PATCH /chats/{id} renames (or clears the title), updates updated_at, refuses bad input, and 404s other users")
    func rename() async throws {
        try await withStack { stack in
            let alice = stack.api(user: "alice"), bob = stack.api(user: "bob")
            let thread = try await alice.createThread(title: "before")
            let created = try alice.json(try await alice.request("GET", "/chats/\(thread)"))["thread"] as? [String: Any]
            let stream = try await alice.connectedStream(thread)

            let renamed = try await alice.request("PATCH", "/chats/\(thread)", json: #"{"title": "after ✓"}"#)
            #expect(renamed.status == 200, "\(renamed.text)")
            let after = try alice.json(renamed)
            #expect(after["id"] as? String == thread)
            #expect(after["title"] as? String == "after ✓")
            #expect(after["created_at"] as? String == created?["created_at"] as? String)
            let updatedAt = try #require(after["updated_at"] as? String), createdUpdatedAt = try #require(created?["updated_at"] as? String)
            #expect(updatedAt > createdUpdatedAt, "\(updatedAt) after \(createdUpdatedAt)")
            let fetched = try alice.json(try await alice.request("GET", "/chats/\(thread)"))["thread"] as? [String: Any]
            #expect(fetched?["title"] as? String == "after ✓")

            let longest = String(repeating: "é", count: 512)  // 1024 bytes of UTF-8: the limit
            #expect(try await alice.request("PATCH", "/chats/\(thread)", json: #"{"title": "\#(longest)"}"#).status == 200)
            let cleared = try await alice.request("PATCH", "/chats/\(thread)", json: #"{"title": null}"#)
            #expect(cleared.status == 200)
            #expect(try alice.json(cleared)["title"] == nil)
            #expect(try await alice.request("PATCH", "/chats/\(thread)", json: #"{"title": "kept"}"#).status == 200)

            let refused: [(name: String, api: API, path: String, body: String, status: Int)] = [
                ("another user's thread", bob, "/chats/\(thread)", #"{"title": "bob's now"}"#, 404),
                ("a missing thread", alice, "/chats/\(UUID().uuidString.lowercased())", #"{"title": "x"}"#, 404),
                ("not a UUID", alice, "/chats/nope", #"{"title": "x"}"#, 400),
                ("malformed JSON", alice, "/chats/\(thread)", #"{"title": "#, 400),
                ("title not a string", alice, "/chats/\(thread)", #"{"title": 5}"#, 422),
                ("title too long", alice, "/chats/\(thread)", #"{"title": "\#(longest)x"}"#, 422),
                ("no title", alice, "/chats/\(thread)", "{}", 422),
                ("unknown field", alice, "/chats/\(thread)", #"{"title": "x", "owner": "bob"}"#, 422),
                ("NUL in the title", alice, "/chats/\(thread)", #"{"title": "a\u0000b"}"#, 422),
            ]
            for testCase in refused {
                let response = try await testCase.api.request("PATCH", testCase.path, json: testCase.body)
                #expect(response.status == testCase.status, "\(testCase.name): \(response.text)")
                #expect(testCase.api.errorCode(response) != nil, "\(testCase.name): \(response.text)")
            }
            let final = try alice.json(try await alice.request("GET", "/chats/\(thread)"))["thread"] as? [String: Any]
            #expect(final?["title"] as? String == "kept")
            #expect(final?["owner"] as? String == "alice")
            // A rename is not a stream event.
            try await Task.sleep(for: .milliseconds(300))
            #expect(stream.events.isEmpty)
            await stream.connection.closeGracefully()
        }
    }
}

/// `ids` as a JSON array of strings.
func jsonArray(_ ids: [String]) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: ids), as: UTF8.self)
}
