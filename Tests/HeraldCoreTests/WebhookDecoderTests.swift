import Foundation
import Testing

@testable import HeraldCore

@Suite("webhook decoding")
struct WebhookDecoderTests {
    let run = UUID()

    @Test("LangGraph success: the reply is the last AI message, the run id comes from the callback URL")
    func langGraphSuccess() throws {
        let event = try WebhookDecoder.decode(try fixture("langgraph-webhook-success.json"), runIDFromURL: run)
        guard case .final(let reference, let status, let reply, let error) = event else { Issue.record("\(event)"); return }
        #expect(reference.runID == run)
        #expect(reference.engineRunID == "01a1fd75-5143-70bf-a97c-e7fad2b92ba1")
        #expect(reference.threadID == UUID(uuidString: "484e2cd0-5fff-40ff-81c1-16d719ca3536"))
        #expect(status == .completed)
        #expect(reply == "echo: hello")
        #expect(error == nil)
    }

    @Test("LangGraph error: the run fails with the engine's message")
    func langGraphError() throws {
        let event = try WebhookDecoder.decode(try fixture("langgraph-webhook-error.json"), runIDFromURL: nil)
        guard case .final(let reference, let status, _, let error) = event else { Issue.record("\(event)"); return }
        #expect(reference.runID == nil)
        #expect(status == .failed)
        #expect(error == ErrorDetail(code: "ValueError", message: "the graph was asked to fail"))
    }

    @Test("LangGraph content blocks are joined; herald_run_id in metadata identifies the run")
    func contentBlocks() throws {
        let body = """
        {"run_id":"x","thread_id":"not-ours","status":"success","metadata":{"herald_run_id":"\(run.text)"},
         "values":{"messages":[{"type":"human","content":"q"},{"type":"ai","content":[{"type":"text","text":"a"},{"type":"tool_use","id":"t"},{"type":"text","text":"b"}]}]}}
        """
        let event = try WebhookDecoder.decode(Array(body.utf8), runIDFromURL: nil)
        #expect(event == .final(RunReference(runID: run, engineRunID: "x", threadID: nil), status: .completed, reply: "ab", error: nil))
    }

    @Test("LangGraph timeout and interrupted map to timed_out and failed")
    func otherStatuses() throws {
        for (status, expected) in [("timeout", RunStatus.timedOut), ("interrupted", .failed)] {
            let event = try WebhookDecoder.decode(Array(#"{"run_id":"x","status":"\#(status)"}"#.utf8), runIDFromURL: run)
            guard case .final(_, let decoded, _, let error) = event else { Issue.record("\(event)"); continue }
            #expect(decoded == expected)
            #expect(error != nil)
        }
    }

    @Test("native events: delta, completed, error, status")
    func native() throws {
        let reference = RunReference(runID: run, engineRunID: nil, threadID: nil)
        #expect(try WebhookDecoder.decode(Array(#"{"run_id":"\#(run.text)","event":"delta","index":4,"delta":"tok"}"#.utf8), runIDFromURL: nil)
            == .delta(reference, index: 4, text: "tok"))
        #expect(try WebhookDecoder.decode(Array(#"{"event":"delta","delta":"tok"}"#.utf8), runIDFromURL: run)
            == .delta(reference, index: nil, text: "tok"))
        #expect(try WebhookDecoder.decode(Array(#"{"run_id":"\#(run.text)","event":"completed","content":"done"}"#.utf8), runIDFromURL: nil)
            == .final(reference, status: .completed, reply: "done", error: nil))
        #expect(try WebhookDecoder.decode(Array(#"{"run_id":"\#(run.text)","event":"error","error":"boom"}"#.utf8), runIDFromURL: nil)
            == .final(reference, status: .failed, reply: nil, error: ErrorDetail(code: "agent_error", message: "boom")))
        #expect(try WebhookDecoder.decode(Array(#"{"run_id":"\#(run.text)","event":"status","status":"running"}"#.utf8), runIDFromURL: nil)
            == .status(reference, status: .running))
    }

    @Test("bad bodies: not JSON is malformed, the wrong shape is invalid", arguments: [
        ("", true), ("{", true), ("\u{FF}", true), ("[1]", false), (#"{"a":1}"#, false),
        (#"{"event":"delta","delta":"x"}"#, false),
        (#"{"run_id":"00000000-0000-0000-0000-000000000000","event":"delta","delta":1}"#, false),
        (#"{"run_id":"00000000-0000-0000-0000-000000000000","event":"delta","delta":"x","index":-1}"#, false),
        (#"{"run_id":"00000000-0000-0000-0000-000000000000","event":"delta","delta":"x","index":1.5}"#, false),
        (#"{"run_id":"00000000-0000-0000-0000-000000000000","event":"completed","content":5}"#, false),
        (#"{"run_id":"00000000-0000-0000-0000-000000000000","event":"status","status":"bogus"}"#, false),
        (#"{"run_id":"x","status":"weird"}"#, false),
    ])
    func badBodies(body: String, malformed: Bool) {
        do {
            let event = try WebhookDecoder.decode(Array(body.utf8), runIDFromURL: nil)
            Issue.record("decoded \(event) from \(body)")
        } catch {
            switch error {
            case .malformed: #expect(malformed, "\(body)")
            case .invalid: #expect(!malformed, "\(body)")
            }
        }
    }

    @Test("a body run id that contradicts the callback URL is refused")
    func mismatchedRun() {
        #expect(throws: WebhookDecodingError.self) {
            try WebhookDecoder.decode(Array(#"{"run_id":"\#(UUID().uuidString)","event":"completed"}"#.utf8), runIDFromURL: run)
        }
    }
}

@Suite("configuration")
struct ConfigurationTests {
    @Test("defaults and overrides")
    func overrides() throws {
        let configuration = try HeraldConfiguration.fromEnvironment([
            "HERALD_INSECURE_DEV": "1", "HERALD_PORT": "9000", "AGENT_KIND": "generic", "HERALD_HEARTBEAT_SECONDS": "0.5", "PUBLIC_URL": "https://h.example/",
        ])
        #expect(configuration.port == 9000)
        #expect(configuration.agentKind == .generic)
        #expect(configuration.heartbeatSeconds == 0.5)
        #expect(configuration.publicURL == "https://h.example")
        #expect(configuration.logMaxLength == 1000)
    }

    @Test("security settings: a JWT secret is required unless development mode is explicit")
    func securitySettings() throws {
        #expect(throws: ConfigurationError.self) { try HeraldConfiguration.fromEnvironment([:]) }
        do {
            _ = try HeraldConfiguration.fromEnvironment([:])
        } catch {
            #expect(error.variable == "HERALD_JWT_SECRET")
        }
        let development = try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1"])
        #expect(development.jwtSecret == nil && development.developmentMode)
        let secure = try HeraldConfiguration.fromEnvironment([
            "HERALD_JWT_SECRET": String(repeating: "k", count: 32),
            "HERALD_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_c2Vjb25k",
            "HERALD_CORS_ORIGINS": "https://app.example.com,http://localhost:3000",
        ])
        #expect(secure.webhookSecrets.count == 2)
        #expect(secure.corsOrigins == ["https://app.example.com", "http://localhost:3000"])
        for (variable, value) in [
            ("HERALD_JWT_SECRET", "short"), ("HERALD_WEBHOOK_SECRET", "not-a-secret"), ("HERALD_CORS_ORIGINS", "*"),
            ("HERALD_INSECURE_DEV", "maybe"),
        ] {
            var environment = ["HERALD_INSECURE_DEV": "1"]
            environment[variable] = value
            do {
                _ = try HeraldConfiguration.fromEnvironment(environment)
                Issue.record("accepted \(variable)=\(value)")
            } catch {
                #expect(error.variable == variable, "\(error)")
            }
        }
    }

    @Test("a bad value names the variable and the reason", arguments: [
        ("HERALD_PORT", "eighty"), ("HERALD_PORT", "70000"), ("AGENT_KIND", "crewai"), ("REDIS_URL", "localhost:6379"),
        ("DATABASE_URL", "mysql://x"), ("HERALD_HEARTBEAT_SECONDS", "-1"), ("HERALD_LOG_MAXLEN", "0"), ("AGENT_URL", "ftp://x"),
    ])
    func invalid(variable: String, value: String) {
        do {
            _ = try HeraldConfiguration.fromEnvironment([variable: value])
            Issue.record("accepted \(variable)=\(value)")
        } catch {
            #expect(error.variable == variable)
            #expect(error.description.hasPrefix("configuration error: \(variable) "))
            #expect(error.description.contains(value))
        }
    }
}
