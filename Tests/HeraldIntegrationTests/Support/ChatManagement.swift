import Foundation
import HeraldTestSupport
import Testing

extension API {
    /// `method path` with a JSON body given as text (so malformed bodies can be sent as they are).
    func request(_ method: String, _ path: String, json body: String) async throws -> TestHTTPResponse {
        try await request(method, path, headers: [("Content-Type", "application/json")], body: Array(body.utf8))
    }

    /// The error code of a JSON error answer.
    func errorCode(_ response: TestHTTPResponse) -> String? {
        ((try? json(response))?["error"] as? [String: Any])?["code"] as? String
    }
}
