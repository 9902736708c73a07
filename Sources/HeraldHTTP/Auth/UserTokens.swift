import Foundation
import HeraldCore
import JWTKit

/// Verifies user tokens. Two kinds are accepted, told apart by the header's `alg`:
/// - Herald's own, HS256 with `HERALD_JWT_SECRET` (what `herald token` mints): `sub` names the user.
/// - An identity provider's, signed with a key from its JWKS (`ProviderKeySet`): the configured claim names
///   the user, and `iss`/`aud` are checked as configured.
/// Either way `exp` is required and `nbf`/`iat` are checked when present, with the configured leeway.
/// Every other `alg` (`none`, HS384, an HS256 token when there is no secret, …) is refused.
public struct UserTokens: Sendable {
    /// The secret `make run` and tests use when started with the development flag. Never for production.
    public static let developmentSecret = "herald-development-secret-not-for-production"

    /// Only the HS256 key: jwt-kit uses it whatever `kid` a token names.
    private let ownKeys: JWTKeyCollection?
    private let ownRules: ClaimRules
    private let provider: ProviderKeySet?
    private let providerRules: ClaimRules?

    public init(secret: String?, provider: ProviderKeySet?, leewaySeconds: Int) async {
        if let secret {
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            self.ownKeys = keys
        } else {
            self.ownKeys = nil
        }
        self.ownRules = .own(leewaySeconds: Double(leewaySeconds))
        self.provider = provider
        self.providerRules = provider.map { provider in
            ClaimRules(
                leewaySeconds: Double(leewaySeconds), issuer: provider.settings.issuer, audiences: Set(provider.settings.audiences),
                userClaim: provider.settings.userClaim
            )
        }
    }

    /// For minting: Herald's own tokens only.
    public init(secret: String) async {
        await self.init(secret: secret, provider: nil, leewaySeconds: 0)
    }

    /// The user a token names, or why it is refused.
    func user(fromToken token: String) async throws(TokenRejection) -> String {
        let header = try TokenHeader(token: token)
        if header.algorithm == "HS256", let ownKeys {
            return try ownRules.user(from: try await Self.verifiedClaims(token, with: ownKeys), now: Date().timeIntervalSince1970)
        }
        guard let provider, let providerRules, ProviderKeys.supportedAlgorithms.contains(header.algorithm) else {
            throw .algorithmNotAccepted
        }
        let keys = try await provider.keys(keyID: header.keyID, algorithm: header.algorithm)
        return try providerRules.user(from: try await Self.verifiedClaims(token, with: keys), now: Date().timeIntervalSince1970)
    }

    private static func verifiedClaims(_ token: String, with keys: JWTKeyCollection) async throws(TokenRejection) -> TokenClaims {
        do {
            return try await keys.verify(token, as: TokenClaims.self)
        } catch let error as JWTError where error.errorType == .signatureVerificationFailed {
            throw .badSignature
        } catch {
            throw .malformed
        }
    }

    public func mint(user: String, validFor ttl: Duration) async throws -> String {
        guard let ownKeys else { throw JWTError.noKeyProvided }
        let now = Date().timeIntervalSince1970.rounded(.down)
        let claims = TokenClaims(expiration: now + Double(ttl.components.seconds), issuedAt: now, strings: ["sub": user])
        return try await ownKeys.sign(claims)
    }
}
