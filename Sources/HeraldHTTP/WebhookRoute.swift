import Foundation
import HTTPTypes
import HeraldCore
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import NIOCore
import PostgresClient
import RedisClient

/// `POST /webhook/chat-response`: results, errors and deltas from the engine.
///
/// Authenticated before the body is even decoded, one of two ways: a Standard Webhooks signature
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`), or the per-run token of the callback URL Herald
/// handed to an engine that cannot sign. Anything else is a 401 with nothing stored or published.
struct WebhookRoute {
    let coordinator: RunCoordinator
    let signatures: StandardWebhooks?
    let configuration: HeraldConfiguration

    var store: ChatStore { coordinator.store }

    func register(on router: Router<HeraldRequestContext>) {
        router.post("webhook/chat-response", use: receive)
    }

    enum Credential {
        /// A valid signature; the delivery id makes redeliveries idempotent.
        case signed(deliveryID: String)
        /// A valid callback token, good for this run (and its thread) only.
        case callbackToken(run: UUID, thread: UUID)
    }

    /// Timed by outcome (`herald_webhook_duration_seconds{outcome}`): the handled outcomes, or why it was refused.
    @Sendable func receive(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let start = ContinuousClock.now
        var outcome = "failed"
        defer { Self.durations[outcome].record(since: start) }
        do {
            let handled = try await process(request)
            outcome = handled.rawValue
            return respond(handled)
        } catch {
            outcome = Self.failureOutcome(of: error)
            throw error
        }
    }

    private static let durations = MetricHandles { Timer(label: "herald_webhook_duration_seconds", dimensions: [("outcome", $0)]) }
    private static let outcomes = MetricHandles { Counter(label: "herald_webhooks_total", dimensions: [("outcome", $0)]) }

    /// A bounded name for a refused webhook.
    static func failureOutcome(of error: any Error) -> String {
        switch error {
        case let error as APIError:
            switch error.status {
            case .unauthorized: "unauthorized"
            case .serviceUnavailable: "unavailable"
            default: "invalid"
            }
        case is WebhookDecodingError: "invalid"
        case is NotFound: "not_found"
        case is DependencyUnavailable, is RedisError: "unavailable"
        case let error as PostgresError where error.isConnectionError: "unavailable"
        default: "failed"
        }
    }

    /// JSON is parsed whatever the Content-Type says: LangGraph's JS server sends it as `text/plain`.
    private func process(_ request: Request) async throws -> RunCoordinator.WebhookOutcome {
        var runIDFromURL: UUID?
        if let text = request.uri.queryParameters.get("run_id") {
            guard let id = UUID(text: text) else { throw APIError(.badRequest, "invalid_id", "run_id must be a UUID") }
            runIDFromURL = id
        }
        let body = try await RequestBody.bytes(of: request, limit: configuration.maxBodyBytes)
        let credential = try await authenticate(request, body: body, runIDFromURL: runIDFromURL)
        guard !JSONDepth.exceeds(body.readableBytesView, limit: configuration.maxJSONDepth) else {
            throw APIError.invalid("JSON nesting deeper than \(configuration.maxJSONDepth) levels")
        }
        let event = try WebhookDecoder.decode(body.readableBytesView, runIDFromURL: runIDFromURL)
        if case .callbackToken(_, let thread) = credential, let claimed = event.reference.threadID, claimed != thread {
            throw APIError.unauthorized("the callback token is not valid for this thread")
        }
        // A delta with an index is idempotent by (run, index) in Redis already; recording its delivery id too
        // would cost a PostgreSQL write per token.
        var deliveryID: String?
        if case .signed(let id) = credential, !event.isIndexedDelta {
            if try await store.deliverySeen(id) { return .duplicate }
            deliveryID = id
        }
        let outcome = try await coordinator.handle(event)
        if let deliveryID {
            try await store.recordDelivery(deliveryID)
        }
        return outcome
    }

    /// `{"status":"accepted"}` and its siblings, written directly: an engine posts a webhook per token, and the
    /// outcomes are plain words, so a JSON encoder has nothing to do here.
    private func respond(_ outcome: RunCoordinator.WebhookOutcome) -> Response {
        let (head, body) = Self.answer(outcome)
        return Response(status: head.status, headers: head.headerFields, body: .init(byteBuffer: body))
    }

    private static func answer(_ outcome: RunCoordinator.WebhookOutcome) -> (HTTPResponse, ByteBuffer) {
        outcomes[outcome.rawValue].increment()
        let body = ByteBuffer(string: #"{"status":""# + outcome.rawValue + #""}"#)
        let headers: HTTPFields = [.contentType: "application/json; charset=utf-8", .contentLength: String(body.readableBytes)]
        return (HTTPResponse(status: .ok, headerFields: headers), body)
    }

    /// A webhook answered on its connection's event loop, without a task, the router or its middleware: a signed,
    /// indexed delta of a run this node knows to be open, with Redis connected (`RunCoordinator.handleNow`), which
    /// is what an engine posts per token. nil for anything else, and a failed future for anything that went wrong:
    /// the request then goes through the router like any other (which may publish the delta again: Redis takes
    /// each (run, index) once). What the middleware would record, it records: `herald_http_requests_total` and
    /// `herald_http_request_duration_seconds` of the route, the webhook's own metrics and the debug line. Only for a
    /// server without tracing (`HeraldApplication`), and never for a request with an `Origin` (CORS).
    func answerNow(_ head: HTTPRequest, body: ByteBuffer, logger: Logger) -> EventLoopFuture<(HTTPResponse, ByteBuffer)>? {
        let start = ContinuousClock.now
        // A token's delta is small; a large body is hashed and read in a task, not on a loop other clients share.
        guard let path = head.path, body.readableBytes <= Self.largestAnsweredNow, let signatures,
              let signed = Self.signatureHeaders(head.headerFields)
        else { return nil }
        // The callback URL Herald hands out names the run (its token is not needed when the delivery is signed).
        let uri = URI(path)
        var runIDFromURL: UUID?
        if let text = uri.queryParameters.get("run_id") {
            guard let id = UUID(text: text) else { return nil }
            runIDFromURL = id
        }
        guard uri.path == Self.path,
              (try? signatures.verify(id: signed.id, timestamp: signed.timestamp, signature: signed.signature, body: body.readableBytesView)) != nil,
              !JSONDepth.exceeds(body.readableBytesView, limit: configuration.maxJSONDepth),
              let event = WebhookDecoder.nativeDelta(body.readableBytesView, runIDFromURL: runIDFromURL),
              let handled = coordinator.handleNow(event)
        else { return nil }
        return handled.map { outcome in
            let answer = Self.answer(outcome)
            Self.durations[outcome.rawValue].record(since: start)
            Self.requests.record(since: start, logger: logger)
            Self.answeredOnLoop.increment()
            return answer
        }
    }

    /// The Standard Webhooks headers; nil for a request with an `Origin`, a repeated one of them or one missing,
    /// which the router then answers.
    private static func signatureHeaders(_ fields: HTTPFields) -> (id: String, timestamp: String, signature: String)? {
        guard let values = fields.singleValues(of: [webhookID, webhookTimestamp, webhookSignature], unlessPresent: .origin),
              let id = values[0], let timestamp = values[1], let signature = values[2]
        else { return nil }
        return (id, timestamp, signature)
    }

    static let path = "/webhook/chat-response"
    private static let largestAnsweredNow = 64 * 1024
    private static let answeredOnLoop = Counter(label: "herald_webhooks_answered_on_loop_total")

    /// What the router's middleware records of a 200 from this route.
    private static let requests = RouteMetrics(route: path, method: .post, status: .ok)

    /// The Standard Webhooks headers.
    private static let webhookID = HTTPField.Name("webhook-id")!
    private static let webhookTimestamp = HTTPField.Name("webhook-timestamp")!
    private static let webhookSignature = HTTPField.Name("webhook-signature")!

    private func authenticate(_ request: Request, body: ByteBuffer, runIDFromURL: UUID?) async throws -> Credential {
        let id = request.headers[Self.webhookID], signature = request.headers[Self.webhookSignature]
        if id != nil || signature != nil {
            guard let signatures else { throw APIError.unauthorized("signed webhooks are not configured") }
            do {
                try signatures.verify(
                    id: id, timestamp: request.headers[Self.webhookTimestamp], signature: signature, body: body.readableBytesView
                )
            } catch {
                Counter(label: "herald_webhook_auth_failures_total", dimensions: [("reason", "\(error)")]).increment()
                throw APIError.unauthorized("webhook signature rejected: \(error)")
            }
            return .signed(deliveryID: id ?? "")
        }
        if let token = request.uri.queryParameters.get("token").map({ String($0) }), let run = runIDFromURL,
           let grant = try await coordinator.callbackGrant(run: run), let hash = grant.tokenHash,
           CallbackToken.matches(token, storedHash: hash) {
            guard grant.acceptsResults else { throw APIError.unauthorized("the callback token expired with its run") }
            return .callbackToken(run: run, thread: grant.thread)
        }
        Counter(label: "herald_webhook_auth_failures_total", dimensions: [("reason", "no_credential")]).increment()
        throw APIError.unauthorized("a webhook signature or a valid callback token is required")
    }
}

extension WebhookEvent {
    var isIndexedDelta: Bool {
        if case .delta(_, .some, _) = self { return true }
        return false
    }

    var reference: RunReference {
        switch self {
        case .final(let reference, _, _, _), .delta(let reference, _, _), .status(let reference, _): reference
        }
    }
}
