import CurlClient
import Foundation
import Testing

@testable import HeraldCore

@Suite("LangGraph adapter: run creation, stream join, reply chunks")
struct LangGraphAdapterTests {
    let engineRunID = "01a22cb4-5ca0-73ec-a5e3-0cc6044fef59"
    let run = AgentRunRequest(
        thread: UUID(), run: UUID(), assistantMessageID: UUID(),
        userMessage: ChatMessage(id: UUID(), threadID: UUID(), runID: nil, role: .user, content: "hi", status: "complete", metadata: .object([:]), createdAt: "2026-11-30T12:00:00Z"),
        callbackURL: "http://herald/webhook/chat-response?run_id=x"
    )

    func body(of request: CurlRequest) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any])
    }

    @Test("streaming asks for messages-tuple and a resumable stream, and joins it from the first event with the key")
    func streamingRequests() throws {
        let adapter = LangGraphAdapter(
            baseURL: "http://engine", assistantID: "chat", credential: AgentCredential(header: "x-api-key", value: "k1"), streamsTokens: true
        )
        let create = adapter.request(for: run)
        #expect(create.url == "http://engine/threads/\(run.thread.text)/runs")
        #expect(create.headers.contains { $0.name == "x-api-key" && $0.value == "k1" })
        let fields = try body(of: create)
        #expect(fields["stream_mode"] as? [String] == ["messages-tuple"])
        #expect(fields["stream_resumable"] as? Bool == true)
        #expect(fields["webhook"] as? String == run.callbackURL)

        let join = try #require(adapter.joinRequest(for: run, engineRunID: engineRunID, timeout: .seconds(60)))
        #expect(join.method == "GET")
        #expect(join.url == "http://engine/threads/\(run.thread.text)/runs/\(engineRunID)/stream")
        #expect(join.headers.contains { $0.name == "Last-Event-ID" && $0.value == "0" })
        #expect(join.headers.contains { $0.name == "x-api-key" && $0.value == "k1" })
        #expect(join.timeout == .seconds(60))
        // An engine run id cannot change the path.
        let odd = try #require(adapter.joinRequest(for: run, engineRunID: "../../x?y", timeout: .seconds(1)))
        #expect(odd.url.hasSuffix("/runs/..%2F..%2Fx%3Fy/stream"))
    }

    @Test("streaming off: no stream options, nothing to join, no key when none is set")
    func streamingOff() throws {
        let adapter = LangGraphAdapter(baseURL: "http://engine", assistantID: "chat")
        let fields = try body(of: adapter.request(for: run))
        #expect(fields["stream_mode"] == nil)
        #expect(fields["stream_resumable"] == nil)
        #expect(adapter.joinRequest(for: run, engineRunID: engineRunID, timeout: .seconds(1)) == nil)
        #expect(!adapter.request(for: run).headers.contains { $0.name.lowercased() == "x-api-key" })
    }

    @Test("a real run stream: the AI chunks of the run, in order, are the reply")
    func realStream() throws {
        var parser = EventStreamParser()
        let events = try parser.feed(try fixture("langgraph-run-stream.txt"))
        let adapter = LangGraphAdapter(baseURL: "http://engine", assistantID: "chat", streamsTokens: true)
        let texts = events.compactMap { adapter.replyText(in: $0, engineRunID: engineRunID) }
        #expect(texts.count == 23)
        #expect(texts.joined() == "You said: hello there. Here is a streamed answer of several tokens.")
        #expect(events.compactMap { adapter.replyText(in: $0, engineRunID: "another-run") }.isEmpty)
    }

    @Test("not the reply: tool-call chunks, human and tool messages, subgraph chunks, other events, junk")
    func notReply() {
        let adapter = LangGraphAdapter(baseURL: "http://engine", assistantID: "chat", streamsTokens: true)
        func text(_ type: String, _ data: String) -> String? {
            adapter.replyText(in: ServerSentEvent(type: type, data: data, lastEventID: "1"), engineRunID: engineRunID)
        }
        let meta = #"{"run_id":"\#(engineRunID)"}"#
        #expect(text("messages", #"[{"type":"AIMessageChunk","content":"tok"},\#(meta)]"#) == "tok")
        #expect(text("messages", #"[{"type":"AIMessageChunk","content":[{"type":"text","text":"blo"},{"type":"tool_use","id":"t"}]},\#(meta)]"#) == "blo")
        #expect(text("messages", #"[{"type":"AIMessageChunk","content":"","tool_call_chunks":[{"name":"search","args":"{"}]},\#(meta)]"#) == nil)
        #expect(text("messages", #"[{"type":"human","content":"question"},\#(meta)]"#) == nil)
        #expect(text("messages", #"[{"type":"tool","content":"result"},\#(meta)]"#) == nil)
        #expect(text("messages", #"[{"type":"AIMessageChunk","content":"other"},{"run_id":"another-run"}]"#) == nil)
        #expect(text("messages|inner:1", #"[{"type":"AIMessageChunk","content":"inner"},\#(meta)]"#) == nil)
        #expect(text("metadata", #"{"run_id":"\#(engineRunID)"}"#) == nil)
        #expect(text("messages", "not json") == nil)
        #expect(text("messages", #"{"type":"AIMessageChunk"}"#) == nil)
    }

    @Test("the API key travels as x-api-key to LangGraph, as a bearer token to a generic agent, or in a named header")
    func credentials() throws {
        var configuration = HeraldConfiguration()
        #expect(configuration.agentCredential == nil)
        configuration = try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1", "AGENT_API_KEY": "secret"])
        #expect(configuration.agentCredential?.header == "x-api-key")
        #expect(configuration.agentCredential?.value == "secret")
        #expect(configuration.agentStream)
        configuration = try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1", "AGENT_API_KEY": "secret", "AGENT_KIND": "generic"])
        #expect(configuration.agentCredential?.header == "Authorization")
        #expect(configuration.agentCredential?.value == "Bearer secret")
        let generic = GenericAdapter(url: "http://agent", credential: configuration.agentCredential)
        #expect(generic.request(for: run).headers.contains { $0.name == "Authorization" && $0.value == "Bearer secret" })
        configuration = try HeraldConfiguration.fromEnvironment([
            "HERALD_INSECURE_DEV": "1", "AGENT_API_KEY": "secret", "AGENT_AUTH_HEADER": "X-Engine-Token", "HERALD_AGENT_STREAM": "off",
        ])
        #expect(configuration.agentCredential?.header == "X-Engine-Token")
        #expect(configuration.agentCredential?.value == "secret")
        #expect(!configuration.agentStream)
        #expect(throws: ConfigurationError.self) {
            try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1", "AGENT_AUTH_HEADER": "Bad Header:"])
        }
        #expect(throws: ConfigurationError.self) {
            try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1", "HERALD_AGENT_STREAM": "sometimes"])
        }
    }
}
