import Foundation
import HeraldCore
import HeraldTestSupport
import Testing

/// Thin helpers over Herald's REST API, decoding with JSONSerialization (independent of Herald's encoders).
struct API {
    let base: String
    /// The user token sent as `Authorization: Bearer`; nil sends none.
    let token: String?

    init(_ base: String, token: String?) {
        self.base = base
        self.token = token
    }

    var authorization: [(String, String)] { token.map { [("Authorization", "Bearer \($0)")] } ?? [] }

    /// A request to `path` (starting with `/`) as this API's user.
    func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil) async throws -> TestHTTPResponse {
        try await TestHTTPClient.request(method, base + path, headers: authorization + headers, body: body)
    }

    /// A webhook as a signing engine sends it (Standard Webhooks, the stack's secret).
    func postWebhook(
        _ body: [UInt8], query: String = "", contentType: String = "application/json", deliveryID: String = "msg_\(UUID().uuidString)",
        headers extraHeaders: [(String, String)] = []
    ) async throws -> TestHTTPResponse {
        let signer = try StandardWebhooks(secrets: [Stack.webhookSecret])
        let timestamp = Int(Date().timeIntervalSince1970)
        return try await TestHTTPClient.request(
            "POST", "\(base)/webhook/chat-response\(query)",
            headers: [
                ("Content-Type", contentType), ("webhook-id", deliveryID), ("webhook-timestamp", String(timestamp)),
                ("webhook-signature", signer.sign(id: deliveryID, timestamp: timestamp, body: body)),
            ] + extraHeaders,
            body: body
        )
    }

    func postWebhook(json: String, query: String = "") async throws -> TestHTTPResponse {
        try await postWebhook(Array(json.utf8), query: query)
    }

    func json(_ response: TestHTTPResponse) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(response.body))
        return try #require(object as? [String: Any], "not a JSON object: \(response.text)")
    }

    func createThread(title: String = "test") async throws -> String {
        let response = try await request("POST", "/chats", headers: [("Content-Type", "application/json")], body: Array(#"{"title":"\#(title)"}"#.utf8))
        #expect(response.status == 201, "create thread: \(response.text)")
        return try #require(try json(response)["id"] as? String)
    }

    /// Sends a message; returns (message id, run id, assistant message id).
    func send(_ thread: String, _ content: String) async throws -> (message: String, run: String, assistantMessage: String) {
        let body = try JSONSerialization.data(withJSONObject: ["content": content])
        let response = try await request("POST", "/chats/\(thread)/send", headers: [("Content-Type", "application/json")], body: Array(body))
        #expect(response.status == 202, "send: \(response.text)")
        let object = try json(response)
        let message = try #require(object["message"] as? [String: Any])
        let run = try #require(object["run"] as? [String: Any])
        return (
            try #require(message["id"] as? String), try #require(run["id"] as? String),
            try #require(run["assistant_message_id"] as? String)
        )
    }

    func messages(_ thread: String) async throws -> [[String: Any]] {
        let response = try await request("GET", "/chats/\(thread)/messages")
        #expect(response.status == 200, "messages: \(response.text)")
        return try #require(try json(response)["messages"] as? [[String: Any]])
    }

    func openStream(_ thread: String, headers: [(String, String)] = [], query: String = "", receiveBufferSize: Int? = nil) async throws -> SSEStream {
        let connection = try await TestStreamingConnection.open(
            "\(base)/chats/sse/\(thread)\(query)", headers: authorization + headers, receiveBufferSize: receiveBufferSize
        )
        #expect(connection.status == 200)
        return SSEStream(connection: connection)
    }

    /// A metric's value from `/metrics` (Prometheus text format).
    func metric(_ name: String) async throws -> Double? {
        let response = try await TestHTTPClient.request("GET", "\(base)/metrics")
        for line in response.text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.split(separator: " ").last ?? "")
        }
        return nil
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(
    timeout: Duration = .seconds(10), _ description: String, _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("timed out waiting for: \(description)")
    throw CancellationError()
}

extension SSEEvent {
    /// The event's data as a JSON object.
    var object: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] ?? [:]
    }
}
