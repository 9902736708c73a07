import Foundation
import JWTKit

/// HS256 JSON Web Tokens for users: `sub` is the user, `exp` is required. Tokens with any other algorithm,
/// `alg: none` included, are refused by the key collection, which only holds the HS256 key.
public struct UserTokens: Sendable {
    /// The secret `make run` and tests use when started with the development flag. Never for production.
    public static let developmentSecret = "herald-development-secret-not-for-production"

    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var iat: IssuedAtClaim

        func verify(using algorithm: some JWTAlgorithm) throws {
            try exp.verifyNotExpired()
            guard !sub.value.isEmpty, sub.value.utf8.count <= 256 else {
                throw JWTError.claimVerificationFailure(failedClaim: sub, reason: "sub must be 1 to 256 bytes")
            }
        }
    }

    private let keys: JWTKeyCollection

    public init(secret: String) async {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.keys = keys
    }

    /// The user a token names, or nil when it is malformed, wrongly signed, expired or not HS256.
    public func user(fromToken token: String) async -> String? {
        guard token.utf8.count <= 8192, let claims = try? await keys.verify(token, as: Claims.self) else { return nil }
        return claims.sub.value
    }

    public func mint(user: String, validFor ttl: Duration) async throws -> String {
        let now = Date()
        let seconds = Double(ttl.components.seconds) + Double(ttl.components.attoseconds) / 1e18
        return try await keys.sign(Claims(sub: .init(value: user), exp: .init(value: now.addingTimeInterval(seconds)), iat: .init(value: now)))
    }
}
