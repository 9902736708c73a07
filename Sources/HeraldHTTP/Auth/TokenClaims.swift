import Foundation
import JWTKit

/// Why a user token was refused. `description` becomes the RFC 6750 `error_description`: it names the rule
/// the token broke, never a key, a configured value or an internal error.
enum TokenRejection: Error, Equatable, CustomStringConvertible {
    case tooLarge
    case malformed
    case algorithmNotAccepted
    case unknownKey
    case algorithmDoesNotMatchKey
    case badSignature
    case missingExpiry
    case expired
    case notYetValid
    case issuedInFuture
    case wrongIssuer
    case wrongAudience
    case missingUser

    var description: String {
        switch self {
        case .tooLarge: "the token is larger than 8 KiB"
        case .malformed: "the token is not a well-formed JWT"
        case .algorithmNotAccepted: "the token's signing algorithm is not accepted"
        case .unknownKey: "the token's signing key is unknown"
        case .algorithmDoesNotMatchKey: "the token's algorithm does not match its key"
        case .badSignature: "the token's signature is invalid"
        case .missingExpiry: "the token has no expiry (exp)"
        case .expired: "the token has expired"
        case .notYetValid: "the token is not valid yet (nbf)"
        case .issuedInFuture: "the token is issued in the future (iat)"
        case .wrongIssuer: "the token's issuer is not accepted"
        case .wrongAudience: "the token's audience is not accepted"
        case .missingUser: "the token does not name a user"
        }
    }
}

/// The JOSE header fields that choose the key: read before any signature check.
struct TokenHeader {
    let algorithm: String
    let keyID: String?

    /// Longest token accepted; larger ones are refused before they are decoded.
    static let maximumTokenBytes = 8192

    init(token: String) throws(TokenRejection) {
        guard token.utf8.count <= Self.maximumTokenBytes else { throw .tooLarge }
        let segments = token.split(separator: ".", omittingEmptySubsequences: false)
        guard segments.count == 3, let json = Base64URL.decode(segments[0]) else { throw .malformed }
        struct Fields: Decodable {
            let alg: String
            let kid: String?
        }
        guard let fields = try? JSONDecoder().decode(Fields.self, from: json) else { throw .malformed }
        self.algorithm = fields.alg
        self.keyID = fields.kid
    }
}

enum Base64URL {
    static func decode(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}

/// The registered claims Herald checks, and every string-valued claim (one of them names the user).
/// Times are NumericDate seconds; a claim of the wrong JSON type makes the token malformed.
struct TokenClaims: JWTPayload, Equatable {
    var expiration: Double?
    var notBefore: Double?
    var issuedAt: Double?
    var issuer: String?
    /// `aud`, a string or an array of strings in the token.
    var audiences: [String]?
    var strings: [String: String]

    init(
        expiration: Double? = nil, notBefore: Double? = nil, issuedAt: Double? = nil, issuer: String? = nil,
        audiences: [String]? = nil, strings: [String: String] = [:]
    ) {
        self.expiration = expiration
        self.notBefore = notBefore
        self.issuedAt = issuedAt
        self.issuer = issuer
        self.audiences = audiences
        self.strings = strings
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { return nil }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        expiration = try container.decodeIfPresent(Double.self, forKey: Key("exp"))
        notBefore = try container.decodeIfPresent(Double.self, forKey: Key("nbf"))
        issuedAt = try container.decodeIfPresent(Double.self, forKey: Key("iat"))
        issuer = try container.decodeIfPresent(String.self, forKey: Key("iss"))
        if let single = try? container.decodeIfPresent(String.self, forKey: Key("aud")) {
            audiences = [single]
        } else {
            audiences = try container.decodeIfPresent([String].self, forKey: Key("aud"))
        }
        var strings: [String: String] = [:]
        for key in container.allKeys {
            if let value = try? container.decode(String.self, forKey: key) { strings[key.stringValue] = value }
        }
        self.strings = strings
    }

    /// For `herald token`: the string claims, then the registered ones (which win on a clash).
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for (name, value) in strings { try container.encode(value, forKey: Key(name)) }
        try container.encodeIfPresent(expiration, forKey: Key("exp"))
        try container.encodeIfPresent(notBefore, forKey: Key("nbf"))
        try container.encodeIfPresent(issuedAt, forKey: Key("iat"))
        try container.encodeIfPresent(issuer, forKey: Key("iss"))
        try container.encodeIfPresent(audiences, forKey: Key("aud"))
    }

    /// Claims are checked by `ClaimRules` once the signature holds: they need the configured leeway, issuer
    /// and audience, which jwt-kit's per-payload hook does not have.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// What a verified token's claims must satisfy, and which claim names the user.
struct ClaimRules: Sendable, Equatable {
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    var leewaySeconds: Double
    /// The exact `iss` required; nil accepts any.
    var issuer: String?
    /// When not empty, `aud` must name at least one of these.
    var audiences: Set<String>
    var userClaim: String

    /// Herald's own HS256 tokens: `sub` names the user; there is no issuer or audience to check.
    static func own(leewaySeconds: Double) -> ClaimRules {
        ClaimRules(leewaySeconds: leewaySeconds, issuer: nil, audiences: [], userClaim: "sub")
    }

    /// The user the claims name, at `now` (seconds since 1970), or why they are not acceptable.
    func user(from claims: TokenClaims, now: Double) throws(TokenRejection) -> String {
        guard let expiration = claims.expiration else { throw .missingExpiry }
        guard now < expiration + leewaySeconds else { throw .expired }
        if let notBefore = claims.notBefore, now + leewaySeconds < notBefore { throw .notYetValid }
        if let issuedAt = claims.issuedAt, now + leewaySeconds < issuedAt { throw .issuedInFuture }
        if let issuer, claims.issuer != issuer { throw .wrongIssuer }
        if !audiences.isEmpty, !(claims.audiences ?? []).contains(where: audiences.contains) { throw .wrongAudience }
        guard let user = claims.strings[userClaim], !user.isEmpty, user.utf8.count <= 256 else { throw .missingUser }
        return user
    }
}
