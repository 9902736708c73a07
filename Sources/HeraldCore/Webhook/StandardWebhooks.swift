import Crypto
import Foundation

/// Verification (and signing) of webhooks per Standard Webhooks (https://www.standardwebhooks.com).
///
/// A delivery carries `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`, a space-separated
/// list of `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`. It passes when its timestamp is within the
/// tolerance of `now` and any one listed signature matches any one configured secret: a sender rotating its secret
/// signs with both for a while, and a receiver rotating configures both.
public struct StandardWebhooks: Sendable {
    public enum Failure: Error, Sendable, Equatable {
        /// A header is absent, empty, or unreasonably large.
        case missingHeaders
        /// `webhook-timestamp` is not a plain decimal number of seconds.
        case invalidTimestamp
        /// The timestamp is further than the tolerance from now, in either direction (replay protection).
        case timestampOutOfTolerance
        /// No `v1` signature in the header matches any configured secret.
        case noMatchingSignature
        /// A configured secret is not `whsec_<base64 key>` (or none was given).
        case invalidSecret
    }

    public static let secretPrefix = "whsec_"
    /// Longest accepted `webhook-id` (ids in practice are ~30 bytes, e.g. `msg_2KWPBgLlAfxdpx2AI54pPJ85f4W`).
    static let maxIDLength = 256
    /// Longest accepted `webhook-timestamp`: unix seconds have 10 digits until the year 2286.
    static let maxTimestampLength = 12
    /// Longest accepted `webhook-signature`: room for dozens of signatures, bounded work per request.
    static let maxSignatureHeaderLength = 4096
    /// Longest accepted decoded key.
    static let maxKeyLength = 1024

    /// One HMAC per secret with its key already absorbed: each delivery starts from a copy (the hash states are
    /// copied on write), which saves padding the key and hashing it into both states per webhook.
    private let keyedMACs: [HMAC<SHA256>]
    private let tolerance: Double

    /// `secrets`: one or more `whsec_…` secrets (the env var HERALD_WEBHOOK_SECRET will hold them space- or
    /// comma-separated); throws .invalidSecret for a malformed one.
    public init(secrets: [String], tolerance: Duration = .seconds(300)) throws(Failure) {
        guard !secrets.isEmpty else { throw .invalidSecret }
        var keyedMACs: [HMAC<SHA256>] = []
        for secret in secrets {
            keyedMACs.append(HMAC<SHA256>(key: SymmetricKey(data: try Self.key(of: secret))))
        }
        self.keyedMACs = keyedMACs
        let (seconds, attoseconds) = tolerance.components
        self.tolerance = Double(seconds) + Double(attoseconds) / 1e18
    }

    /// Splits a list of secrets on spaces, commas (and other whitespace) and validates each one.
    /// Throws .invalidSecret for a malformed secret, or when there is none at all.
    public static func parseSecrets(_ text: String) throws(Failure) -> [String] {
        let secrets = text.split { $0 == "," || $0.isWhitespace }.map(String.init)
        guard !secrets.isEmpty else { throw .invalidSecret }
        for secret in secrets {
            _ = try key(of: secret)
        }
        return secrets
    }

    /// The key bytes of `whsec_<base64>`. Unpadded base64 is accepted, as the reference libraries do.
    private static func key(of secret: String) throws(Failure) -> Data {
        guard secret.hasPrefix(secretPrefix) else { throw .invalidSecret }
        var encoded = String(secret.dropFirst(secretPrefix.count))
        guard !encoded.isEmpty, encoded.utf8.count <= maxKeyLength * 2 else { throw .invalidSecret }
        if encoded.utf8.count % 4 != 0 {
            encoded += String(repeating: "=", count: 4 - encoded.utf8.count % 4)
        }
        guard let key = Data(base64Encoded: encoded), !key.isEmpty, key.count <= maxKeyLength else {
            throw .invalidSecret
        }
        return key
    }

    /// Checks one delivery. `id`, `timestamp` and `signature` are the raw header values (nil when absent); `body`
    /// is the request body exactly as received.
    public func verify(
        id: String?, timestamp: String?, signature: String?, body: some Collection<UInt8>, now: Date = Date()
    ) throws(Failure) {
        guard let id, let timestamp, let signature, !id.isEmpty, !timestamp.isEmpty, !signature.isEmpty,
              id.utf8.count <= Self.maxIDLength, signature.utf8.count <= Self.maxSignatureHeaderLength
        else { throw .missingHeaders }

        guard timestamp.utf8.count <= Self.maxTimestampLength,
              timestamp.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let seconds = Int64(timestamp)
        else { throw .invalidTimestamp }
        let sent = Double(seconds)
        let current = now.timeIntervalSince1970
        // As the reference implementation: exactly `tolerance` away still passes.
        guard sent >= current - tolerance, sent <= current + tolerance else { throw .timestampOutOfTolerance }

        // Bytes, not Characters: the header is ASCII, and grapheme breaking showed in the webhook profile.
        let candidates: [Data] = signature.utf8.split(separator: UInt8(ascii: " ")).compactMap { entry in
            guard entry.starts(with: "v1,".utf8) else { return nil }  // other versions are skipped, not failed
            let decoded = Data(base64Encoded: Data(entry.dropFirst(3)))
            return decoded?.count == SHA256.byteCount ? decoded : nil
        }
        guard !candidates.isEmpty else { throw .noMatchingSignature }

        for keyed in keyedMACs {
            let expected = Self.mac(keyed, id: id, timestamp: timestamp, body: body)
            // `HashedAuthenticationCode == DataProtocol` is swift-crypto's constant-time comparison.
            for candidate in candidates where expected == candidate {
                return
            }
        }
        throw .noMatchingSignature
    }

    /// For senders (the demo agent): the header value `v1,<base64>` for the first secret.
    public func sign(id: String, timestamp: Int, body: some Collection<UInt8>) -> String {
        let mac = Self.mac(keyedMACs[0], id: id, timestamp: String(timestamp), body: body)
        return "v1," + Data(mac).base64EncodedString()
    }

    private static func mac(
        _ keyed: HMAC<SHA256>, id: String, timestamp: String, body: some Collection<UInt8>
    ) -> HashedAuthenticationCode<SHA256> {
        var hmac = keyed
        hmac.update(data: Array("\(id).\(timestamp).".utf8))
        let contiguous: Void? = body.withContiguousStorageIfAvailable { bytes in
            hmac.update(data: UnsafeRawBufferPointer(bytes))
        }
        if contiguous == nil {
            hmac.update(data: Array(body))
        }
        return hmac.finalize()
    }
}
