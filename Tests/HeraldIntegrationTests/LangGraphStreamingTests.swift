import Foundation
import HeraldTestSupport
import Testing

/// Herald against a real LangGraph server (`langgraph dev`): it starts runs with the engine's API key, joins each
/// run's stream and relays the model's chunks as `delta` frames; the webhook brings the final message.
@Suite("LangGraph: live tokens from a real server", .serialized, .timeLimit(.minutes(10)))
struct LangGraphStreamingTests {
    /// What a stream showed for one run, read until its final `run_status`.
    struct RunFrames {
        var deltas: [(index: Int, text: String)] = []
        var reply: String?
        var error: [String: Any]?
        var finalStatus: String?
        var deltasAfterReply = 0

        var replyFromDeltas: String { deltas.map(\.text).joined() }
    }

    private func withLangGraphStack<T>(
        apiKey: String? = LangGraphServer.apiKey, environment: [String: String] = [:], engineURL: String? = nil,
        _ body: (Stack) async throws -> T
    ) async throws -> T {
        let url = try await LangGraphServer.shared.url()
        var settings = ["AGENT_ASSISTANT_ID": LangGraphServer.assistantID]
        if let apiKey { settings["AGENT_API_KEY"] = apiKey }
        settings.merge(environment) { _, new in new }
        return try await withStack(agent: .external(engineURL ?? url), environment: settings, body)
    }

    /// Sends `content` on a new thread and reads the stream until the run's final status.
    private func converse(_ stack: Stack, _ content: String, whileStreaming: (@Sendable (SSEStream) async throws -> Void)? = nil) async throws -> RunFrames {
        let api = stack.api()
        let thread = try await api.createThread()
        let stream = try await api.openStream(thread)
        try await stream.waitForComment(containing: "connected")
        let sent = try await api.send(thread, content)
        if let whileStreaming { try await whileStreaming(stream) }
        var frames = RunFrames()
        var seen = 0
        while frames.finalStatus == nil {
            let events = try await stream.waitForEvents(count: seen + 1, timeout: .seconds(30))
            for event in events[seen...] where event.object["run_id"] as? String == sent.run {
                switch event.type {
                case "delta":
                    #expect(event.object["message_id"] as? String == sent.assistantMessage)
                    frames.deltas.append((event.object["index"] as? Int ?? -1, event.object["delta"] as? String ?? ""))
                    if frames.reply != nil { frames.deltasAfterReply += 1 }
                case "message_update":
                    let message = event.object["message"] as? [String: Any]
                    if message?["role"] as? String == "assistant" { frames.reply = message?["content"] as? String }
                case "error":
                    frames.error = event.object["error"] as? [String: Any]
                case "run_status":
                    if let status = event.object["status"] as? String, !["queued", "running"].contains(status) { frames.finalStatus = status }
                default:
                    break
                }
            }
            seen = events.count
        }
        await stream.connection.closeGracefully()
        return frames
    }

    @Test("a reply streams in as deltas, in order, that add up to the stored message")
    func tokensStream() async throws {
        try await withLangGraphStack { stack in
            let frames = try await converse(stack, "hello engine")
            #expect(frames.finalStatus == "completed")
            let reply = try #require(frames.reply)
            #expect(reply == "You said: hello engine. Here is a streamed answer of several tokens.")
            #expect(frames.deltas.count > 5, "expected token deltas, got \(frames.deltas.count)")
            #expect(frames.deltas.map(\.index) == Array(0..<frames.deltas.count))
            #expect(frames.replyFromDeltas == reply)
            #expect(frames.deltasAfterReply == 0)
            let joins = try await stack.api().metric(#"herald_agent_stream_joins_total{outcome="started"}"#)
            #expect(joins == 1)
        }
    }

    @Test("a graph that raises fails the run with the engine's error")
    func graphRaises() async throws {
        try await withLangGraphStack { stack in
            let frames = try await converse(stack, "please fail")
            #expect(frames.finalStatus == "failed")
            #expect(frames.reply == nil)
            let error = try #require(frames.error)
            #expect((error["message"] as? String ?? "").contains("failed on purpose"), "\(error)")
        }
    }

    @Test("a join cut mid-run is rejoined: no delta repeated or lost")
    func joinCutMidRun() async throws {
        let engine = try await LangGraphServer.shared.url()
        let proxy = try await TCPProxy.start(forwardingTo: Int(engine.split(separator: ":").last!)!)
        defer { Task { try? await proxy.stop() } }
        try await withLangGraphStack(engineURL: "http://127.0.0.1:\(proxy.port)") { stack in
            let frames = try await converse(stack, "answer slowly") { stream in
                // A few chunks in, every connection to the engine (the join among them) is cut.
                try await eventually(timeout: .seconds(20), "five deltas") { stream.events.filter { $0.type == "delta" }.count >= 5 }
                #expect(proxy.openConnections >= 1)
                proxy.cutAll()
            }
            #expect(frames.finalStatus == "completed")
            let reply = try #require(frames.reply)
            #expect(reply.hasPrefix("You said: answer slowly. Here is word0 word1"))
            #expect(frames.deltas.map(\.index) == Array(0..<frames.deltas.count), "\(frames.deltas.map(\.index))")
            #expect(frames.replyFromDeltas == reply)
            let rejoins = try await stack.api().metric(#"herald_agent_stream_joins_total{outcome="rejoined"}"#) ?? 0
            #expect(rejoins >= 1)
        }
    }

    @Test("with streaming off the run still completes, from the webhook alone")
    func streamingOff() async throws {
        try await withLangGraphStack(environment: ["HERALD_AGENT_STREAM": "off"]) { stack in
            let frames = try await converse(stack, "no tokens please")
            #expect(frames.finalStatus == "completed")
            #expect(frames.deltas.isEmpty)
            #expect(frames.reply == "You said: no tokens please. Here is a streamed answer of several tokens.")
        }
    }

    @Test("an engine that requires an API key: runs start with it, fail clearly without it")
    func apiKeyRequired() async throws {
        try await withLangGraphStack(apiKey: nil) { stack in
            let frames = try await converse(stack, "hello without a key")
            #expect(frames.finalStatus == "failed")
            let error = try #require(frames.error)
            #expect(error["code"] as? String == "agent_unauthorized")
            #expect((error["message"] as? String ?? "").contains("AGENT_API_KEY"), "\(error)")
        }
        try await withLangGraphStack(apiKey: "a-wrong-key") { stack in
            let frames = try await converse(stack, "hello with a wrong key")
            #expect(frames.finalStatus == "failed")
            #expect(frames.error?["code"] as? String == "agent_unauthorized")
            #expect(!stack.logs().contains("a-wrong-key"), "the API key must never be logged")
        }
    }
}
