import CurlClient
import Foundation

/// What an engine needs to start a run.
public struct AgentRunRequest: Sendable {
    public var thread: UUID
    public var run: UUID
    public var assistantMessageID: UUID
    public var userMessage: ChatMessage
    /// Where the engine posts its result and deltas.
    public var callbackURL: String
}

/// Turns a run into the HTTP request a kind of engine understands, and reads the engine's own run id back.
public protocol AgentAdapter: Sendable {
    func request(for run: AgentRunRequest) -> CurlRequest
    func engineRunID(from response: CurlResponse) -> String?
}

extension AgentAdapter {
    /// Both kinds answer with a JSON object whose `run_id` is the engine's own id for the run.
    public func engineRunID(from response: CurlResponse) -> String? {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(response.body)) else { return nil }
        return value["run_id"]?.stringValue
    }
}

private let agentJSONEncoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.withoutEscapingSlashes]
    return encoder
}()

private func jsonRequest(url: String, body: some Encodable) -> CurlRequest {
    let bytes = (try? agentJSONEncoder.encode(body)).map(Array.init) ?? []
    return CurlRequest(
        method: "POST", url: url,
        headers: [(name: "Content-Type", value: "application/json"), (name: "Accept", value: "application/json")],
        body: bytes, timeout: .seconds(15), connectTimeout: .seconds(3)
    )
}

/// LangGraph's `POST /threads/{thread_id}/runs` with a webhook. Herald's thread id is the LangGraph thread id
/// (`if_not_exists: create`), and Herald's run id rides in `metadata` so the webhook can be matched.
public struct LangGraphAdapter: AgentAdapter {
    public let baseURL: String
    public let assistantID: String

    public init(baseURL: String, assistantID: String) {
        self.baseURL = baseURL
        self.assistantID = assistantID
    }

    struct Body: Encodable {
        struct Input: Encodable {
            struct Message: Encodable {
                var role: String
                var content: String
            }
            var messages: [Message]
        }
        var assistant_id: String
        var input: Input
        var webhook: String
        var if_not_exists: String
        var multitask_strategy: String
        var metadata: [String: String]
    }

    public func request(for run: AgentRunRequest) -> CurlRequest {
        jsonRequest(
            url: "\(baseURL)/threads/\(run.thread.text)/runs",
            body: Body(
                assistant_id: assistantID,
                input: .init(messages: [.init(role: "user", content: run.userMessage.content)]),
                webhook: run.callbackURL,
                if_not_exists: "create",
                multitask_strategy: "enqueue",
                metadata: [
                    WebhookDecoder.runIDMetadataKey: run.run.text,
                    "herald_message_id": run.assistantMessageID.text,
                ]
            )
        )
    }
}

/// Any HTTP agent: `POST {AGENT_URL}` with the run and the callback URL; it answers through the native webhook.
public struct GenericAdapter: AgentAdapter {
    public let url: String

    public init(url: String) {
        self.url = url
    }

    struct Body: Encodable {
        var thread_id: String
        var run_id: String
        var assistant_message_id: String
        var message: ChatMessage
        var callback_url: String
    }

    public func request(for run: AgentRunRequest) -> CurlRequest {
        jsonRequest(
            url: url,
            body: Body(
                thread_id: run.thread.text, run_id: run.run.text, assistant_message_id: run.assistantMessageID.text,
                message: run.userMessage, callback_url: run.callbackURL
            )
        )
    }
}
