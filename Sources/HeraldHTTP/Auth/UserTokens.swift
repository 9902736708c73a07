import Foundation
import HeraldCore
import JWTKit
import NIOConcurrencyHelpers

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
    private let verified = VerifiedTokens()
    private let leewaySeconds: Double

    public init(secret: String?, provider: ProviderKeySet?, leewaySeconds: Int) async {
        if let secret {
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            self.ownKeys = keys
        } else {
            self.ownKeys = nil
        }
        self.ownRules = .own(leewaySeconds: Double(leewaySeconds))
        self.leewaySeconds = Double(leewaySeconds)
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

    /// The user a token names, or why it is refused. A token verified a moment ago is not verified again (see
    /// `VerifiedTokens`): a page opening streams, or thousands of clients reconnecting, present the same tokens.
    func user(fromToken token: String) async throws(TokenRejection) -> String {
        let now = Date().timeIntervalSince1970
        if let user = verified.user(of: token, now: now) { return user }
        let header = try TokenHeader(token: token)
        let claims: TokenClaims
        let user: String
        if header.algorithm == "HS256", let ownKeys {
            claims = try await Self.verifiedClaims(token, with: ownKeys)
            user = try ownRules.user(from: claims, now: now)
        } else {
            guard let provider, let providerRules, ProviderKeys.supportedAlgorithms.contains(header.algorithm) else {
                throw .algorithmNotAccepted
            }
            let keys = try await provider.keys(keyID: header.keyID, algorithm: header.algorithm)
            claims = try await Self.verifiedClaims(token, with: keys)
            user = try providerRules.user(from: claims, now: now)
        }
        if let expiration = claims.expiration {
            verified.remember(token, user: user, until: min(expiration + leewaySeconds, now + VerifiedTokens.maximumAgeSeconds))
        }
        return user
    }

    /// The user of a token verified a moment ago, without verifying anything (nil if it was not).
    func knownUser(ofToken token: String) -> String? {
        verified.user(of: token, now: Date().timeIntervalSince1970)
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

/// Tokens verified recently, with their user: a hit skips parsing two JSON segments and checking a signature,
/// the largest costs of opening a stream. An entry lasts until the token expires, and never more than a few
/// minutes, so that a key the identity provider withdrew stops admitting tokens it signed soon after its JWKS
/// says so. Bounded: when full, it starts over.
final class VerifiedTokens: Sendable {
    static let maximumAgeSeconds: Double = 300
    static let capacity = 10_000

    private struct Entry {
        let user: String
        let validUntil: Double
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    func user(of token: String, now: Double) -> String? {
        entries.withLockedValue { entries in
            guard let entry = entries[token] else { return nil }
            guard now < entry.validUntil else {
                entries[token] = nil
                return nil
            }
            return entry.user
        }
    }

    func remember(_ token: String, user: String, until validUntil: Double) {
        entries.withLockedValue { entries in
            if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
            entries[token] = Entry(user: user, validUntil: validUntil)
        }
    }
}
