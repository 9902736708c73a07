import Foundation
import Testing

@testable import HeraldCore

/// One case of Fixtures/standard-webhooks-vectors.json, made by scripts/generate-webhook-vectors.py with the
/// reference Python library (`standardwebhooks` on PyPI).
struct WebhookVector: Decodable, Sendable, CustomTestStringConvertible {
    var name: String
    var secrets: [String]
    var headers: [String: String]
    var body: String
    var now: Int
    /// "valid", or the name of a `StandardWebhooks.Failure` case.
    var expected: String

    var testDescription: String { name }

    static func load() throws -> [WebhookVector] {
        struct File: Decodable { var cases: [WebhookVector] }
        return try JSONDecoder().decode(File.self, from: Data(try fixture("standard-webhooks-vectors.json"))).cases
    }

    /// Loaded once for the parameterized test; a load failure is reported by `vectorsLoad`.
    static let all: [WebhookVector] = (try? load()) ?? []
}

@Suite("Standard Webhooks")
struct StandardWebhooksTests {
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    static let otherSecret = "whsec_tetkZKaJTlV8crlwo+z3ZuSZoJxolyeGFCWjlALdl9w="
    let now = Date(timeIntervalSince1970: 1_732_200_000)

    func outcome(_ verify: () throws(StandardWebhooks.Failure) -> Void) -> String {
        do throws(StandardWebhooks.Failure) {
            try verify()
            return "valid"
        } catch {
            return "\(error)"
        }
    }

    @Test("the vectors file loads and covers every outcome")
    func vectorsLoad() throws {
        let vectors = try WebhookVector.load()
        #expect(vectors.count >= 30)
        #expect(Set(vectors.map(\.expected)) == [
            "valid", "missingHeaders", "invalidTimestamp", "timestampOutOfTolerance", "noMatchingSignature",
        ])
    }

    @Test("agrees with the reference implementation", arguments: WebhookVector.all)
    func vector(_ vector: WebhookVector) throws {
        let verifier = try StandardWebhooks(secrets: vector.secrets)
        let result = outcome { () throws(StandardWebhooks.Failure) in
            try verifier.verify(
                id: vector.headers["webhook-id"], timestamp: vector.headers["webhook-timestamp"],
                signature: vector.headers["webhook-signature"], body: Array(vector.body.utf8),
                now: Date(timeIntervalSince1970: TimeInterval(vector.now))
            )
        }
        #expect(result == vector.expected, "\(vector.name)")
    }

    @Test("sign then verify, with contiguous and non-contiguous bodies")
    func roundTrip() throws {
        let sender = try StandardWebhooks(secrets: [Self.secret, Self.otherSecret])
        let body = Array(#"{"event":"completed","content":"héllo\nwörld"}"#.utf8)
        let signature = sender.sign(id: "msg_1", timestamp: 1_732_200_000, body: body)
        #expect(signature.hasPrefix("v1,"))
        // Signed with the first secret only.
        let receiver = try StandardWebhooks(secrets: [Self.secret])
        try receiver.verify(id: "msg_1", timestamp: "1732200000", signature: signature, body: body, now: now)
        try receiver.verify(id: "msg_1", timestamp: "1732200000", signature: signature, body: body.lazy.map { $0 }, now: now)
        try receiver.verify(id: "msg_1", timestamp: "1732200000", signature: signature, body: Data(body), now: now)
        let other = try StandardWebhooks(secrets: [Self.otherSecret])
        #expect(throws: StandardWebhooks.Failure.noMatchingSignature) {
            try other.verify(id: "msg_1", timestamp: "1732200000", signature: signature, body: body, now: now)
        }
        #expect(throws: StandardWebhooks.Failure.noMatchingSignature) {
            try receiver.verify(id: "msg_1", timestamp: "1732200000", signature: signature, body: body.dropLast(), now: now)
        }
    }

    @Test("the tolerance is configurable and applies both ways")
    func tolerance() throws {
        let verifier = try StandardWebhooks(secrets: [Self.secret], tolerance: .seconds(10))
        let body = Array("{}".utf8)
        for (offset, expected) in [(-11, "timestampOutOfTolerance"), (-10, "valid"), (10, "valid"), (11, "timestampOutOfTolerance")] {
            let timestamp = 1_732_200_000 + offset
            let signature = verifier.sign(id: "m", timestamp: timestamp, body: body)
            let result = outcome { () throws(StandardWebhooks.Failure) in
                try verifier.verify(id: "m", timestamp: String(timestamp), signature: signature, body: body, now: now)
            }
            #expect(result == expected, "offset \(offset)")
        }
    }

    @Test("unreasonable ids, timestamps and signature headers are refused before any HMAC")
    func sizes() throws {
        let verifier = try StandardWebhooks(secrets: [Self.secret])
        let body = Array("{}".utf8)
        let signature = verifier.sign(id: "m", timestamp: 1_732_200_000, body: body)
        let longID = String(repeating: "a", count: 257)
        #expect(throws: StandardWebhooks.Failure.missingHeaders) {
            try verifier.verify(id: longID, timestamp: "1732200000", signature: signature, body: body, now: now)
        }
        #expect(throws: StandardWebhooks.Failure.missingHeaders) {
            let many = Array(repeating: signature, count: 200).joined(separator: " ")
            try verifier.verify(id: "m", timestamp: "1732200000", signature: many, body: body, now: now)
        }
        for timestamp in ["0001732200000", "+1732200000", "-1732200000", " 1732200000", "1732200000.0", "1e9", "١٧٣٢٢٠٠٠٠٠"] {
            #expect(throws: StandardWebhooks.Failure.invalidTimestamp, "\(timestamp)") {
                try verifier.verify(id: "m", timestamp: timestamp, signature: signature, body: body, now: now)
            }
        }
        // Several signatures, some malformed, one good: passes.
        try verifier.verify(
            id: "m", timestamp: "1732200000", signature: "v1,AAAA garbage v2,\(signature.dropFirst(3)) \(signature)",
            body: body, now: now
        )
    }

    @Test("parseSecrets splits on spaces and commas and rejects malformed secrets")
    func parseSecrets() throws {
        #expect(try StandardWebhooks.parseSecrets(Self.secret) == [Self.secret])
        #expect(try StandardWebhooks.parseSecrets(" \(Self.secret), \(Self.otherSecret)\n") == [Self.secret, Self.otherSecret])
        #expect(try StandardWebhooks.parseSecrets("\(Self.secret),\(Self.otherSecret)") == [Self.secret, Self.otherSecret])
        #expect(try StandardWebhooks.parseSecrets("whsec_YWJj") == ["whsec_YWJj"])
        #expect(try StandardWebhooks.parseSecrets("whsec_YWI") == ["whsec_YWI"])  // unpadded base64
        for text in ["", "  , ,", "whsec_", "whsec_!!!", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "wh_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                     "\(Self.secret) whsec_not*base64", "whsec_A", "whsec_" + String(repeating: "A", count: 4000)] {
            #expect(throws: StandardWebhooks.Failure.invalidSecret, "\(text)") {
                _ = try StandardWebhooks.parseSecrets(text)
            }
        }
        #expect(throws: StandardWebhooks.Failure.invalidSecret) { _ = try StandardWebhooks(secrets: []) }
        #expect(throws: StandardWebhooks.Failure.invalidSecret) { _ = try StandardWebhooks(secrets: [Self.secret, "nope"]) }
    }
}
