import CurlClient
import Foundation
import HeraldCore
import Hummingbird
import Logging
import Synchronization

/// A small engine speaking the LangGraph subset Herald uses: `POST /threads/{id}/runs` with a `webhook`. After a
/// short delay it streams the reply as native `delta` webhooks, then posts the LangGraph-shaped final run.
/// It also accepts the generic adapter's `POST /` and answers that through native webhooks.
///
/// The reply is `echo: <content>`. Content containing `[[fail]]` ends the run with an error; content
/// containing `[[silent]]` never calls back (the run times out). With a webhook secret it signs every
/// callback (Standard Webhooks); without one it relies on the callback URL's token, as LangGraph does.
/// `GET /runs` lists the runs received, callback URLs included, for demos and tests.
public enum DemoAgent {
    public struct Options: Sendable {
        public var host: String
        public var port: Int
        /// Pause before the first token and between tokens.
        public var firstTokenDelay: Duration
        public var tokenDelay: Duration
        /// Signs callbacks when set.
        public var signer: StandardWebhooks?
        /// CAs to trust for callbacks to an HTTPS Herald with a private certificate.
        public var callbackCAFile: String?

        public init(
            host: String, port: Int, firstTokenDelay: Duration = .milliseconds(150), tokenDelay: Duration = .milliseconds(30),
            signer: StandardWebhooks? = nil, callbackCAFile: String? = nil
        ) {
            self.host = host
            self.port = port
            self.firstTokenDelay = firstTokenDelay
            self.tokenDelay = tokenDelay
            self.signer = signer
            self.callbackCAFile = callbackCAFile
        }
    }

    public static func application(options: Options, logger: Logger) throws -> some ApplicationProtocol {
        let http = try CurlHTTPClient(logger: logger, caFile: options.callbackCAFile)
        let jobs = BackgroundJobs()
        let engine = Engine(http: http, options: options, logger: logger)
        let received = ReceivedRuns()
        let router = Router()
        router.get("healthz") { _, _ in "ok" }
        router.get("runs") { _, _ in jsonResponse(["runs": .array(received.all)]) }
        router.post("threads/:thread_id/runs") { request, context -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            guard let run = LangGraphRunRequest(body: body), let thread = context.parameters.get("thread_id") else {
                return Response(status: .unprocessableContent)
            }
            let engineRunID = UUID().uuidString.lowercased()
            received.append(["thread_id": .string(thread), "webhook": .string(run.webhook), "content": .string(run.userContent)])
            jobs.submit { await engine.answer(run, thread: thread, engineRunID: engineRunID) }
            return jsonResponse(["run_id": .string(engineRunID), "thread_id": .string(thread), "status": .string("pending")])
        }
        router.post("/") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            guard let run = GenericRunRequest(body: body) else { return Response(status: .unprocessableContent) }
            received.append(["thread_id": .string(run.threadID), "webhook": .string(run.callbackURL), "content": .string(run.userContent)])
            jobs.submit { await engine.answer(run) }
            return jsonResponse(["status": .string("accepted")])
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "herald-demo-agent"),
            services: [jobs],
            logger: logger
        )
    }

    private static func jsonResponse(_ object: [String: JSONValue]) -> Response {
        let data = (try? JSONEncoder().encode(JSONValue.object(object))) ?? Data()
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The runs this agent was asked to do, newest last.
final class ReceivedRuns: Sendable {
    private let runs = Mutex<[JSONValue]>([])

    func append(_ run: [String: JSONValue]) {
        runs.withLock { $0.append(.object(run)) }
    }

    var all: [JSONValue] { runs.withLock { $0 } }
}

struct LangGraphRunRequest {
    let userContent: String
    let webhook: String
    let metadata: JSONValue
    let assistantID: String

    init?(body: ByteBuffer) {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(body.readableBytesView)),
              case .string(let webhook)? = value["webhook"],
              case .array(let messages)? = value["input"]?["messages"],
              let content = messages.last?["content"]?.stringValue
        else { return nil }
        self.webhook = webhook
        self.userContent = content
        self.metadata = value["metadata"] ?? .object([:])
        self.assistantID = value["assistant_id"]?.stringValue ?? "demo"
    }
}

struct GenericRunRequest {
    let threadID: String
    let runID: String
    let userContent: String
    let callbackURL: String

    init?(body: ByteBuffer) {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(body.readableBytesView)),
              let threadID = value["thread_id"]?.stringValue, let runID = value["run_id"]?.stringValue,
              let callbackURL = value["callback_url"]?.stringValue,
              let content = value["message"]?["content"]?.stringValue
        else { return nil }
        self.threadID = threadID
        self.runID = runID
        self.userContent = content
        self.callbackURL = callbackURL
    }
}

/// Produces the replies and posts them back, retrying like LangGraph does on 5xx and connection errors.
struct Engine: Sendable {
    let http: CurlHTTPClient
    let options: DemoAgent.Options
    let logger: Logger
    let retry = RetryPolicy(maxAttempts: 4, initialDelay: .milliseconds(300), maxDelay: .seconds(3))

    static func reply(to content: String) -> String { "echo: \(content)" }

    /// Word-sized tokens that concatenate back to the reply.
    static func tokens(of reply: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        for character in reply {
            current.append(character)
            if character == " " {
                tokens.append(current)
                current = ""
            }
        }
        if !current.isEmpty { tokens.append(current) }
        return tokens
    }

    func answer(_ run: LangGraphRunRequest, thread: String, engineRunID: String) async {
        if run.userContent.contains("[[silent]]") { return }
        let heraldRunID = run.metadata[WebhookDecoder.runIDMetadataKey]?.stringValue
        try? await Task.sleep(for: options.firstTokenDelay)
        let failing = run.userContent.contains("[[fail]]")
        let reply = Self.reply(to: run.userContent)
        if !failing, let heraldRunID {
            await streamDeltas(of: reply, to: run.webhook, thread: thread, run: heraldRunID)
        }
        var final: [String: JSONValue] = [
            "run_id": .string(engineRunID),
            "thread_id": .string(thread),
            "assistant_id": .string(run.assistantID),
            "metadata": run.metadata,
            "status": .string(failing ? "error" : "success"),
            "webhook_sent_at": .string(ISO8601DateFormatter().string(from: Date())),
        ]
        var messages: [JSONValue] = [.object(["type": .string("human"), "content": .string(run.userContent)])]
        if failing {
            final["error"] = .object(["error": .string("ValueError"), "message": .string("the graph was asked to fail")])
        } else {
            messages.append(.object(["type": .string("ai"), "content": .string(reply)]))
        }
        final["values"] = .object(["messages": .array(messages)])
        // LangGraph's JS server sends the run as text/plain; Herald must not care.
        await post(.object(final), to: run.webhook, contentType: "text/plain;charset=UTF-8")
    }

    func answer(_ run: GenericRunRequest) async {
        if run.userContent.contains("[[silent]]") { return }
        try? await Task.sleep(for: options.firstTokenDelay)
        let reply = Self.reply(to: run.userContent)
        if run.userContent.contains("[[fail]]") {
            await post(
                .object([
                    "thread_id": .string(run.threadID), "run_id": .string(run.runID), "event": .string("error"),
                    "error": .object(["code": .string("demo_failure"), "message": .string("the demo agent was asked to fail")]),
                ]),
                to: run.callbackURL, contentType: "application/json"
            )
            return
        }
        await streamDeltas(of: reply, to: run.callbackURL, thread: run.threadID, run: run.runID)
        await post(
            .object([
                "thread_id": .string(run.threadID), "run_id": .string(run.runID), "event": .string("completed"), "content": .string(reply),
            ]),
            to: run.callbackURL, contentType: "application/json"
        )
    }

    private func streamDeltas(of reply: String, to url: String, thread: String, run: String) async {
        for (index, token) in Self.tokens(of: reply).enumerated() {
            await post(
                .object([
                    "thread_id": .string(thread), "run_id": .string(run), "event": .string("delta"),
                    "index": .number(Double(index)), "delta": .string(token),
                ]),
                to: url, contentType: "application/json"
            )
            try? await Task.sleep(for: options.tokenDelay)
        }
    }

    private func post(_ body: JSONValue, to url: String, contentType: String) async {
        let bytes = (try? JSONEncoder().encode(body)).map(Array.init) ?? []
        var headers = [(name: "Content-Type", value: contentType)]
        if let signer = options.signer {
            // One id and timestamp per delivery: retries resend the same headers, so Herald can drop repeats.
            let id = "msg_\(UUID().uuidString.lowercased())"
            let timestamp = Int(Date().timeIntervalSince1970)
            headers += [
                (name: "webhook-id", value: id),
                (name: "webhook-timestamp", value: String(timestamp)),
                (name: "webhook-signature", value: signer.sign(id: id, timestamp: timestamp, body: bytes)),
            ]
        }
        let request = CurlRequest(method: "POST", url: url, headers: headers, body: bytes)
        do {
            let response = try await http.execute(request, retrying: retry)
            if response.status >= 300 {
                logger.warning("webhook refused", metadata: ["url": "\(url)", "status": "\(response.status)"])
            }
        } catch {
            logger.warning("webhook failed", metadata: ["url": "\(url)", "error": "\(error)"])
        }
    }
}
