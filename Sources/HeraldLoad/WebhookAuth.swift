import ArgumentParser
import Crypto
import Foundation
import NIOCore
import NIOHTTP1

/// How the load tool's webhooks authenticate (docs/webhooks.md).
enum WebhookAuthMode: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// A Standard Webhooks signature with a `whsec_` secret Herald also has (HERALD_WEBHOOK_SECRET).
    case signed
    /// The run's callback URL, token included, that Herald handed the engine: read back from the demo agent's
    /// `GET /runs`.
    case token
    /// No credential at all (only for a Herald without webhook authentication).
    case none
}

/// Signs webhooks per Standard Webhooks: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
struct WebhookSigner: Sendable {
    private let key: SymmetricKey
    /// Unique per invocation, so that delivery ids never repeat across runs against one server.
    private let idPrefix: String

    init(secret: String) throws {
        guard secret.hasPrefix("whsec_") else { throw LoadError("the webhook secret must look like whsec_<base64>") }
        var encoded = String(secret.dropFirst("whsec_".count))
        if encoded.utf8.count % 4 != 0 {
            encoded += String(repeating: "=", count: 4 - encoded.utf8.count % 4)
        }
        guard let bytes = Data(base64Encoded: encoded), !bytes.isEmpty else {
            throw LoadError("the webhook secret's part after whsec_ is not base64")
        }
        key = SymmetricKey(data: bytes)
        idPrefix = "msg_load_\(getpid())_\(UInt32.random(in: 0...UInt32.max))_"
    }

    /// `webhook-id`, `webhook-timestamp` and `webhook-signature` for one delivery of `body`.
    func headers(index: Int, body: ByteBuffer) -> [(String, String)] {
        let id = idPrefix + String(index)
        let timestamp = String(Int(Date().timeIntervalSince1970))
        var hmac = HMAC<SHA256>(key: key)
        hmac.update(data: Array("\(id).\(timestamp).".utf8))
        body.withUnsafeReadableBytes { hmac.update(data: $0) }
        let signature = "v1," + Data(hmac.finalize()).base64EncodedString()
        return [("webhook-id", id), ("webhook-timestamp", timestamp), ("webhook-signature", signature)]
    }
}

/// Where and how the deltas are posted.
struct WebhookTarget: Sendable {
    /// Path and query of the webhook route, e.g. `/webhook/chat-response?run_id=…&token=…`.
    let uri: String
    let signer: WebhookSigner?
    /// Plain pub/sub mode: the body is `PlainDelta`'s, and any 2xx means accepted.
    var plain = false

    /// The callback URL Herald gave the demo agent for `thread`'s run, read from the agent's `GET /runs`
    /// (polled for up to 10 s: the trigger reaches the agent in the background).
    static func callbackURI(agent: Target, thread: String, group: any EventLoopGroup) async throws -> String {
        for _ in 0..<100 {
            let reply = try await HTTP.oneShot(.GET, "/runs", json: nil, target: agent, group: group)
            if reply.status == .ok,
               let object = try? JSONSerialization.jsonObject(with: Data(reply.body.readableBytesView)) as? [String: Any],
               let runs = object["runs"] as? [[String: Any]],
               let run = runs.last(where: { ($0["thread_id"] as? String)?.lowercased() == thread.lowercased() }),
               let url = run["webhook"] as? String {
                guard let uri = pathAndQuery(of: url) else { throw LoadError("the agent's callback URL \(url) has no path") }
                return uri
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw LoadError("the agent at \(agent.hostHeader) did not receive the run of thread \(thread) within 10 s")
    }
}
