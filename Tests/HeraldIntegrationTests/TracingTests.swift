import Foundation
import HeraldTestSupport
import Testing

/// OpenTelemetry on (`OTEL_EXPORTER_OTLP_ENDPOINT`): a local OTLP/HTTP receiver (JSON encoding) collects what the
/// node exports; a test engine records the trigger's `traceparent` and the webhook continues it.
@Suite("traces: send → engine trigger → webhook → publish in one trace", .serialized, .timeLimit(.minutes(3)))
struct TracingTests {
    struct ExportedSpan: CustomStringConvertible {
        let traceID: String
        let spanID: String
        let parentSpanID: String
        let name: String
        let kind: Int
        var description: String { "\(name) kind=\(kind) trace=\(traceID) span=\(spanID) parent=\(parentSpanID)" }
    }

    @Test("the send's server span parents the trigger and its publishes; the webhook continues the engine's traceparent")
    func oneTraceAcrossTheEngine() async throws {
        let collector = try TestHTTPServer { _, _ in
            .respond(status: 200, headers: [("Content-Type", "application/json")], body: Array("{}".utf8))
        }
        defer { collector.stop() }
        let engine = try TestHTTPServer { _, _ in
            .respond(status: 202, headers: [("Content-Type", "application/json")], body: Array("{}".utf8))
        }
        defer { engine.stop() }
        let environment = [
            "AGENT_KIND": "generic", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "herald-test",
        ]
        try await withStack(agent: .external(engine.url), environment: environment) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let sent = try await api.send(thread, "trace me")
            try await eventually("the engine is triggered") { !engine.requests.isEmpty }
            let traceparent = try #require(engine.requests[0].header("traceparent"), "the trigger carries no traceparent")
            let parts = traceparent.split(separator: "-").map(String.init)
            #expect(parts.count == 4 && parts[0] == "00" && parts[1].count == 32 && parts[2].count == 16, "\(traceparent)")
            let (traceID, triggerSpanID) = (parts[1], parts[2])

            // The engine works inside its own span, a child of the trigger, and calls back with it.
            let engineSpanID = String(UInt64.random(in: 1...UInt64.max), radix: 16).leftPadded(to: 16)
            let result = try await api.postWebhook(
                Array(#"{"event":"completed","content":"traced reply"}"#.utf8), query: "?run_id=\(sent.run)",
                headers: [("traceparent", "00-\(traceID)-\(engineSpanID)-01")]
            )
            #expect(result.status == 200)

            var spans: [ExportedSpan] = []
            try await eventually("the spans arrive at the collector") {
                spans = try Self.spans(in: collector.requests.filter { $0.path == "/v1/traces" })
                return spans.filter { $0.traceID == traceID }.count >= 6
            }
            let trace = spans.filter { $0.traceID == traceID }
            let send = try #require(trace.first { $0.name == "/chats/{thread_id}/send" }, "\(spans)")
            #expect(send.parentSpanID.isEmpty && send.kind == 2, "the send's server span starts the trace: \(send)")
            let trigger = try #require(trace.first { $0.name == "engine trigger" }, "\(trace)")
            #expect(trigger.spanID == triggerSpanID && trigger.parentSpanID == send.spanID && trigger.kind == 3, "\(trigger)")
            let webhook = try #require(trace.first { $0.name == "/webhook/chat-response" }, "\(trace)")
            #expect(webhook.parentSpanID == engineSpanID && webhook.kind == 2, "the webhook continues the engine's span: \(webhook)")
            let publishes = trace.filter { $0.name == "publish frames" }
            #expect(publishes.allSatisfy { $0.kind == 4 })
            #expect(Set(publishes.map(\.parentSpanID)) == [send.spanID, trigger.spanID, webhook.spanID], "\(trace)")
            // The request log lines inside a span carry its ids.
            #expect(stack.node.process.log().contains(traceID))
        }
    }

    @Test("an engine that sends no trace headers calls back the URL Herald gave it, and its webhook joins the trace")
    func callbackURLCarriesTheTrace() async throws {
        let collector = try TestHTTPServer { _, _ in
            .respond(status: 200, headers: [("Content-Type", "application/json")], body: Array("{}".utf8))
        }
        defer { collector.stop() }
        let engine = try TestHTTPServer { _, _ in .respond(status: 202) }
        defer { engine.stop() }
        let environment = [
            "AGENT_KIND": "generic", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        ]
        try await withStack(agent: .external(engine.url), environment: environment) { stack in
            let api = stack.api()
            _ = try await api.send(try await api.createThread(), "trace me by URL")
            try await eventually("the engine is triggered") { !engine.requests.isEmpty }
            let trigger = engine.requests[0]
            let body = try #require(try JSONSerialization.jsonObject(with: Data(trigger.body)) as? [String: Any])
            let callbackURL = try #require(body["callback_url"] as? String)
            let traceparent = try #require(trigger.header("traceparent"))
            #expect(callbackURL.contains("traceparent=\(traceparent)"), "\(callbackURL)")
            // Like LangGraph: the callback URL as given (its token authenticates), no trace header.
            let result = try await TestHTTPClient.request(
                "POST", callbackURL, headers: [("Content-Type", "application/json")], body: Array(#"{"event":"completed","content":"ok"}"#.utf8)
            )
            #expect(result.status == 200, "\(result.text)")

            let parts = traceparent.split(separator: "-").map(String.init)
            var trace: [ExportedSpan] = []
            try await eventually("the webhook's span arrives") {
                trace = try Self.spans(in: collector.requests).filter { $0.traceID == parts[1] }
                return trace.contains { $0.name == "/webhook/chat-response" }
            }
            let webhook = try #require(trace.first { $0.name == "/webhook/chat-response" })
            #expect(webhook.parentSpanID == parts[2], "the webhook is a child of the trigger: \(trace)")
        }
    }

    @Test("asking for OTLP/gRPC, which is not built in, stops start-up naming the variable")
    func grpcRefused() async throws {
        let process = try ChildProcess.start(
            builtProduct("herald"), ["serve"],
            environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "HERALD_INSECURE_DEV": "1"]
        )
        #expect(try await process.waitForExit(timeout: .seconds(20)) == 2)
        #expect(process.log().contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "\(process.log())")
    }

    /// The spans of OTLP/HTTP JSON export requests. Ids are hex in OTLP JSON; base64 is accepted too.
    static func spans(in requests: [TestHTTPServer.Request]) throws -> [ExportedSpan] {
        var spans: [ExportedSpan] = []
        for request in requests {
            let export = try #require(try JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any])
            for resourceSpans in export["resourceSpans"] as? [[String: Any]] ?? [] {
                for scopeSpans in resourceSpans["scopeSpans"] as? [[String: Any]] ?? [] {
                    for span in scopeSpans["spans"] as? [[String: Any]] ?? [] {
                        spans.append(
                            ExportedSpan(
                                traceID: hex(span["traceId"]), spanID: hex(span["spanId"]), parentSpanID: hex(span["parentSpanId"]),
                                name: span["name"] as? String ?? "", kind: span["kind"] as? Int ?? 0
                            )
                        )
                    }
                }
            }
        }
        return spans
    }

    static func hex(_ value: Any?) -> String {
        guard let text = value as? String, !text.isEmpty else { return "" }
        if text.count == 16 || text.count == 32, text.allSatisfy(\.isHexDigit) { return text.lowercased() }
        guard let bytes = Data(base64Encoded: text) else { return text }
        return bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

extension String {
    func leftPadded(to length: Int) -> String {
        String(repeating: "0", count: max(0, length - count)) + self
    }
}
