import Foundation
import HeraldTestSupport
import Testing

extension API {
    /// `method path` with a JSON body given as text (so malformed bodies can be sent as they are).
    func request(_ method: String, _ path: String, json body: String) async throws -> TestHTTPResponse {
        try await request(method, path, headers: [("Content-Type", "application/json")], body: Array(body.utf8))
    }

    /// A send with `use_cache`; its whole answer, after checking the 202.
    func send(_ thread: String, _ content: String, useCache: Bool) async throws -> [String: Any] {
        let body = try JSONSerialization.data(withJSONObject: ["content": content, "use_cache": useCache])
        let response = try await request("POST", "/chats/\(thread)/send", headers: [("Content-Type", "application/json")], body: Array(body))
        #expect(response.status == 202, "send: \(response.text)")
        return try json(response)
    }

    /// A stream of `thread` once it is connected: every frame published from then on reaches it.
    func connectedStream(_ thread: String) async throws -> SSEStream {
        let stream = try await openStream(thread)
        try await stream.waitForComment(containing: "connected")
        return stream
    }

    /// The error code of a JSON error answer.
    func errorCode(_ response: TestHTTPResponse) -> String? {
        ((try? json(response))?["error"] as? [String: Any])?["code"] as? String
    }
}

extension Stack {
    /// Runs the demo agent was asked to do (its `GET /runs`).
    func engineRuns() async throws -> Int {
        let response = try await TestHTTPClient.request("GET", "\(agentURL)/runs")
        let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        return try #require(object?["runs"] as? [Any]).count
    }
}
