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
/// Engines that stream a run's output also say how to join that stream and what in it is the reply's text.
public protocol AgentAdapter: Sendable {
    /// What makes two runs "the same assistant" for the response cache: the engine, and the assistant on it.
    var assistantIdentity: String { get }
    func request(for run: AgentRunRequest) -> CurlRequest
    func engineRunID(from response: CurlResponse) -> String?
    /// The request that joins the run's live output from its first event; nil when the engine has none to join.
    func joinRequest(for run: AgentRunRequest, engineRunID: String, timeout: Duration) -> CurlRequest?
    /// The assistant's reply text one event of the joined stream carries, if any.
    func replyText(in event: ServerSentEvent, engineRunID: String) -> String?
}

/// The credential Herald presents to the engine: one header, whose value is never logged.
public struct AgentCredential: Sendable {
    public var header: String
    public var value: String

    public init(header: String, value: String) {
        self.header = header
        self.value = value
    }
}

extension AgentAdapter {
    /// Both kinds answer with a JSON object whose `run_id` is the engine's own id for the run.
    public func engineRunID(from response: CurlResponse) -> String? {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(response.body)) else { return nil }
        return value["run_id"]?.stringValue
    }

    public func joinRequest(for run: AgentRunRequest, engineRunID: String, timeout: Duration) -> CurlRequest? { nil }

    public func replyText(in event: ServerSentEvent, engineRunID: String) -> String? { nil }
}

private let agentJSONEncoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.withoutEscapingSlashes]
    return encoder
}()

private func jsonRequest(url: String, body: some Encodable, credential: AgentCredential?) -> CurlRequest {
    let bytes = (try? agentJSONEncoder.encode(body)).map(Array.init) ?? []
    var headers: [(name: String, value: String)] = [(name: "Content-Type", value: "application/json"), (name: "Accept", value: "application/json")]
    if let credential { headers.append((name: credential.header, value: credential.value)) }
    return CurlRequest(method: "POST", url: url, headers: headers, body: bytes, timeout: .seconds(15), connectTimeout: .seconds(3))
}

/// LangGraph's `POST /threads/{thread_id}/runs` with a webhook. Herald's thread id is the LangGraph thread id
/// (`if_not_exists: create`), and Herald's run id rides in `metadata` so the webhook can be matched.
///
/// With `streamsTokens`, the run is created with `stream_mode: messages-tuple` and a resumable stream, and
/// `joinRequest` joins it (`GET /threads/{thread_id}/runs/{run_id}/stream`) from its first event: LangGraph keeps
/// the events of a resumable run, and `Last-Event-ID: 0` asks for all of them, so nothing emitted before the join
/// (or before a rejoin) is missed. The webhook still brings the final result.
public struct LangGraphAdapter: AgentAdapter {
    public let baseURL: String
    public let assistantID: String
    public let credential: AgentCredential?
    public let streamsTokens: Bool

    /// LangGraph Platform reads its API key from `x-api-key`.
    public static let apiKeyHeader = "x-api-key"

    /// The engine's URL and the `assistant_id`: the same graph name on another server is another assistant.
    public var assistantIdentity: String { "langgraph \(baseURL) \(assistantID)" }

    public init(baseURL: String, assistantID: String, credential: AgentCredential? = nil, streamsTokens: Bool = false) {
        self.baseURL = baseURL
        self.assistantID = assistantID
        self.credential = credential
        self.streamsTokens = streamsTokens
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
        var stream_mode: [String]?
        var stream_resumable: Bool?
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
                ],
                stream_mode: streamsTokens ? ["messages-tuple"] : nil,
                stream_resumable: streamsTokens ? true : nil
            ),
            credential: credential
        )
    }

    public func joinRequest(for run: AgentRunRequest, engineRunID: String, timeout: Duration) -> CurlRequest? {
        guard streamsTokens, let encodedRunID = engineRunID.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) else {
            return nil
        }
        var headers: [(name: String, value: String)] = [(name: "Accept", value: "text/event-stream"), (name: "Last-Event-ID", value: "0")]
        if let credential { headers.append((name: credential.header, value: credential.value)) }
        return CurlRequest(
            method: "GET", url: "\(baseURL)/threads/\(run.thread.text)/runs/\(encodedRunID)/stream",
            headers: headers, timeout: timeout, connectTimeout: .seconds(3)
        )
    }

    /// `messages` events carry `[message chunk, metadata]`. Only the AI's own text chunks of this run are the reply:
    /// not tool-call chunks (no text), not human or tool messages, not another run's chunks, not a subgraph's
    /// (`messages|<namespace>`) inner model calls.
    public func replyText(in event: ServerSentEvent, engineRunID: String) -> String? {
        guard event.type == "messages",
            let value = try? JSONDecoder().decode(JSONValue.self, from: Data(event.data.utf8)),
            case .array(let pair) = value, pair.count == 2,
            pair[0]["type"]?.stringValue == "AIMessageChunk"
        else { return nil }
        if let chunkRunID = pair[1]["run_id"]?.stringValue, chunkRunID != engineRunID { return nil }
        guard let text = try? WebhookDecoder.content(pair[0]["content"], field: "content"), !text.isEmpty else { return nil }
        return text
    }
}

/// Any HTTP agent: `POST {AGENT_URL}` with the run and the callback URL; it answers through the native webhook.
public struct GenericAdapter: AgentAdapter {
    public let url: String
    public let credential: AgentCredential?

    /// A generic engine is one assistant: its URL names it.
    public var assistantIdentity: String { "generic \(url)" }

    public init(url: String, credential: AgentCredential? = nil) {
        self.url = url
        self.credential = credential
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
            ),
            credential: credential
        )
    }
}
