import Foundation
import HeraldCore
import HTTPTypes
import Hummingbird
import Metrics

/// `POST /webhook/chat-response`: results, errors and deltas from the engine.
struct WebhookRoute {
    let coordinator: RunCoordinator
    let configuration: HeraldConfiguration

    func register(on router: Router<HeraldRequestContext>) {
        router.post("webhook/chat-response", use: receive)
    }

    struct Outcome: Encodable {
        let status: String
    }

    /// JSON is parsed whatever the Content-Type says: LangGraph's JS server sends it as `text/plain`.
    @Sendable func receive(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        var runIDFromURL: UUID?
        if let text = request.uri.queryParameters.get("run_id") {
            guard let id = UUID(uuidString: String(text)) else { throw APIError(.badRequest, "invalid_id", "run_id must be a UUID") }
            runIDFromURL = id
        }
        let body = try await RequestBody.bytes(of: request, limit: configuration.maxBodyBytes)
        let event = try WebhookDecoder.decode(body.readableBytesView, runIDFromURL: runIDFromURL)
        let outcome = try await coordinator.handle(event)
        Counter(label: "herald_webhooks_total", dimensions: [("outcome", outcome.rawValue)]).increment()
        return try JSONResponse.make(.ok, Outcome(status: outcome.rawValue))
    }
}
