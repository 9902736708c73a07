import Foundation

/// Which run a webhook is about. The callback URL Herald hands out carries Herald's run id; LangGraph also
/// echoes it in `metadata`; as a last resort the engine's own run id is looked up.
public struct RunReference: Sendable, Equatable {
    public var runID: UUID?
    public var engineRunID: String?
    public var threadID: UUID?
}

/// A webhook body, understood.
public enum WebhookEvent: Sendable, Equatable {
    /// The run ended: `completed` with the reply text, or `failed`/`timed_out` with an error.
    case final(RunReference, status: RunStatus, reply: String?, error: ErrorDetail?)
    /// A token chunk of the reply. `index` orders chunks within the reply; nil lets Herald number it.
    case delta(RunReference, index: Int?, text: String)
    /// Progress without a result (native `status` events), e.g. `running`.
    case status(RunReference, status: RunStatus)
}

public enum WebhookDecodingError: Error, Equatable {
    /// Not JSON at all (400).
    case malformed(String)
    /// JSON, but not a webhook Herald understands (422).
    case invalid(String)
}

/// Decodes LangGraph run payloads and Herald's native body, whatever the Content-Type said.
public enum WebhookDecoder {
    public static let runIDMetadataKey = "herald_run_id"

    public static func decode(_ body: some Collection<UInt8>, runIDFromURL: UUID?) throws(WebhookDecodingError) -> WebhookEvent {
        if let delta = nativeDelta(body, runIDFromURL: runIDFromURL) { return delta }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(body))
        } catch {
            throw .malformed("body is not valid JSON")
        }
        guard case .object(let object) = value else { throw .invalid("body must be a JSON object") }
        guard !value.containsNUL else { throw .invalid("strings must not contain NUL characters") }
        if object["event"] != nil {
            return try native(object, runIDFromURL: runIDFromURL)
        }
        if object["status"] != nil, object["run_id"] != nil {
            return try langGraph(object, runIDFromURL: runIDFromURL)
        }
        throw .invalid("body is neither a LangGraph run (run_id, status) nor a native event (event)")
    }

    // MARK: Native

    /// The native `delta`, a webhook per token, read straight into its fields (`NativeDeltaReader`) rather than
    /// through a JSON tree. It takes only a delta that is valid as it stands; anything else (another event, a wrong
    /// type, an escaped NUL anywhere) is nil, and `decode` reads it the general way, which says precisely what is wrong.
    public static func nativeDelta(_ body: some Collection<UInt8>, runIDFromURL: UUID?) -> WebhookEvent? {
        guard let decoded = NativeDeltaReader.read(body), decoded.event == "delta" else { return nil }
        var threadID: UUID?
        if let text = decoded.threadID {
            guard let id = UUID(text: text) else { return nil }
            threadID = id
        }
        var bodyRunID: UUID?
        if let text = decoded.runID {
            guard let id = UUID(text: text) else { return nil }
            bodyRunID = id
        }
        if let runIDFromURL, let bodyRunID, runIDFromURL != bodyRunID { return nil }
        guard let runID = runIDFromURL ?? bodyRunID else { return nil }
        if let index = decoded.index, index > 1_000_000_000 { return nil }
        return .delta(RunReference(runID: runID, engineRunID: nil, threadID: threadID), index: decoded.index, text: decoded.delta)
    }

    private static func native(_ object: [String: JSONValue], runIDFromURL: UUID?) throws(WebhookDecodingError) -> WebhookEvent {
        let threadID = try optionalUUID(object, "thread_id")
        let bodyRunID = try optionalUUID(object, "run_id")
        if let runIDFromURL, let bodyRunID, runIDFromURL != bodyRunID {
            throw .invalid("run_id in the body does not match the callback URL")
        }
        guard let runID = runIDFromURL ?? bodyRunID else { throw .invalid("run_id is required") }
        let reference = RunReference(runID: runID, engineRunID: nil, threadID: threadID)
        guard case .string(let event) = object["event"] else { throw .invalid("event must be a string") }
        switch event {
        case "delta":
            guard case .string(let text) = object["delta"] else { throw .invalid("delta must be a string") }
            var index: Int?
            switch object["index"] {
            case nil, .null?: index = nil
            case .number(let number)?:
                guard number >= 0, number <= 1_000_000_000, number.rounded() == number else {
                    throw .invalid("index must be a non-negative integer")
                }
                index = Int(number)
            default: throw .invalid("index must be a non-negative integer")
            }
            return .delta(reference, index: index, text: text)
        case "completed":
            let reply = try content(object["content"], field: "content") ?? ""
            return .final(reference, status: .completed, reply: reply, error: nil)
        case "error":
            return .final(reference, status: .failed, reply: nil, error: errorDetail(object["error"], fallbackCode: "agent_error"))
        case "status":
            guard case .string(let text) = object["status"], let status = RunStatus(rawValue: text) else {
                throw .invalid("status must be one of \(RunStatus.allCases.map(\.rawValue).joined(separator: "|"))")
            }
            if status.isFinal {
                let error = status == .completed ? nil : errorDetail(object["error"], fallbackCode: "run_\(status.rawValue)")
                return .final(reference, status: status, reply: try content(object["content"], field: "content"), error: error)
            }
            return .status(reference, status: status)
        default:
            throw .invalid("event must be one of delta|completed|error|status")
        }
    }

    // MARK: LangGraph

    private static func langGraph(_ object: [String: JSONValue], runIDFromURL: UUID?) throws(WebhookDecodingError) -> WebhookEvent {
        guard case .string(let engineRunID) = object["run_id"] else { throw .invalid("run_id must be a string") }
        guard case .string(let status) = object["status"] else { throw .invalid("status must be a string") }
        var runID = runIDFromURL
        if runID == nil, case .string(let text)? = object["metadata"]?[runIDMetadataKey] {
            runID = UUID(text: text)
        }
        // LangGraph's thread id is Herald's when Herald created it; an engine with its own ids is matched by run.
        let reference = RunReference(runID: runID, engineRunID: engineRunID, threadID: try? optionalUUID(object, "thread_id"))
        switch status {
        case "success":
            return .final(reference, status: .completed, reply: try reply(of: object["values"]), error: nil)
        case "error":
            return .final(reference, status: .failed, reply: nil, error: errorDetail(object["error"], fallbackCode: "agent_error"))
        case "timeout":
            return .final(reference, status: .timedOut, reply: nil, error: errorDetail(object["error"], fallbackCode: "agent_timeout"))
        case "interrupted":
            return .final(
                reference, status: .failed, reply: nil,
                error: ErrorDetail(code: "run_interrupted", message: "the engine interrupted the run")
            )
        case "pending", "running":
            return .status(reference, status: .running)
        default:
            throw .invalid("status must be one of success|error|timeout|interrupted")
        }
    }

    /// The reply is the last AI message of `values.messages` (the last message, if none is marked as AI).
    private static func reply(of values: JSONValue?) throws(WebhookDecodingError) -> String {
        guard case .array(let messages)? = values?["messages"], !messages.isEmpty else { return "" }
        let isAI: (JSONValue) -> Bool = { message in
            let type = message["type"]?.stringValue ?? message["role"]?.stringValue
            return type == "ai" || type == "assistant" || type == "AIMessage" || type == "AIMessageChunk"
        }
        guard let last = messages.last(where: isAI) ?? messages.last else { return "" }
        return try content(last["content"], field: "values.messages[-1].content") ?? ""
    }

    /// Message content: a string, or a list of content blocks whose text blocks are joined.
    static func content(_ value: JSONValue?, field: String) throws(WebhookDecodingError) -> String? {
        switch value {
        case nil, .null?:
            return nil
        case .string(let text)?:
            return text
        case .array(let blocks)?:
            var text = ""
            for block in blocks {
                switch block {
                case .string(let piece): text += piece
                case .object(let fields):
                    if case .string(let piece)? = fields["text"], fields["type"] == nil || fields["type"] == .string("text") {
                        text += piece
                    }
                default: throw .invalid("\(field) must be a string or a list of content blocks")
                }
            }
            return text
        default:
            throw .invalid("\(field) must be a string or a list of content blocks")
        }
    }

    private static func errorDetail(_ value: JSONValue?, fallbackCode: String) -> ErrorDetail {
        switch value {
        case .string(let message)?:
            return ErrorDetail(code: fallbackCode, message: message)
        case .object(let fields)?:
            let code = fields["code"]?.stringValue ?? fields["error"]?.stringValue ?? fallbackCode
            let message = fields["message"]?.stringValue ?? "the engine reported an error"
            return ErrorDetail(code: code, message: message)
        default:
            return ErrorDetail(code: fallbackCode, message: "the engine reported an error")
        }
    }

    private static func optionalUUID(_ object: [String: JSONValue], _ key: String) throws(WebhookDecodingError) -> UUID? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let text)?:
            guard let id = UUID(text: text) else { throw .invalid("\(key) must be a UUID") }
            return id
        default: throw .invalid("\(key) must be a UUID string")
        }
    }
}
