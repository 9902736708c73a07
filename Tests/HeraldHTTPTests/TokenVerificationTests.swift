import CurlClient
import Foundation
import HeraldCore
import HeraldTestSupport
import Logging
import Testing

@testable import HeraldHTTP

@Suite("user tokens: claims, headers, key sets, refresh policy")
struct TokenVerificationTests {
    static let now = 1_800_000_000.0

    @Test("claim rules: exp required, leeway on exp/nbf/iat, iss and aud as configured, the user claim")
    func claimRules() throws {
        let rules = ClaimRules(leewaySeconds: 60, issuer: "https://id.example/", audiences: ["api", "app"], userClaim: "email")
        let good = TokenClaims(expiration: Self.now + 1, issuer: "https://id.example/", audiences: ["other", "app"], strings: ["email": "a@example.com"])
        #expect(try rules.user(from: good, now: Self.now) == "a@example.com")
        let cases: [(String, TokenClaims, TokenRejection?)] = [
            ("within exp leeway", modified(good) { $0.expiration = Self.now - 59 }, nil),
            ("exp plus leeway reached", modified(good) { $0.expiration = Self.now - 60 }, .expired),
            ("no exp", modified(good) { $0.expiration = nil }, .missingExpiry),
            ("nbf within leeway", modified(good) { $0.notBefore = Self.now + 60 }, nil),
            ("nbf beyond leeway", modified(good) { $0.notBefore = Self.now + 61 }, .notYetValid),
            ("iat within leeway", modified(good) { $0.issuedAt = Self.now + 60 }, nil),
            ("iat beyond leeway", modified(good) { $0.issuedAt = Self.now + 61 }, .issuedInFuture),
            ("issuer without its trailing slash", modified(good) { $0.issuer = "https://id.example" }, .wrongIssuer),
            ("no issuer", modified(good) { $0.issuer = nil }, .wrongIssuer),
            ("no accepted audience", modified(good) { $0.audiences = ["other"] }, .wrongAudience),
            ("no audience", modified(good) { $0.audiences = nil }, .wrongAudience),
            ("no user claim", modified(good) { $0.strings = ["sub": "x"] }, .missingUser),
            ("empty user", modified(good) { $0.strings = ["email": ""] }, .missingUser),
            ("user over 256 bytes", modified(good) { $0.strings = ["email": String(repeating: "u", count: 257)] }, .missingUser),
        ]
        for (name, claims, expected) in cases {
            do {
                _ = try rules.user(from: claims, now: Self.now)
                #expect(expected == nil, "\(name): accepted")
            } catch {
                #expect(error == expected, "\(name): \(error)")
            }
        }
        // Herald's own tokens: sub only, no iss or aud required, iat optional (RFC 7519 §4.1.6).
        let own = ClaimRules.own(leewaySeconds: 0)
        #expect(try own.user(from: TokenClaims(expiration: Self.now + 1, strings: ["sub": "alice"]), now: Self.now) == "alice")
    }

    private func modified(_ claims: TokenClaims, _ change: (inout TokenClaims) -> Void) -> TokenClaims {
        var copy = claims
        change(&copy)
        return copy
    }

    @Test("claims decode: aud as string or array, numeric dates with fractions; wrong types are malformed")
    func claimsDecoding() throws {
        let decoded = try JSONDecoder().decode(TokenClaims.self, from: Data(#"{"sub":"u","exp":1.5,"aud":"a","n":3,"iss":"i"}"#.utf8))
        #expect(decoded == TokenClaims(expiration: 1.5, issuer: "i", audiences: ["a"], strings: ["sub": "u", "aud": "a", "iss": "i"]))
        #expect(try JSONDecoder().decode(TokenClaims.self, from: Data(#"{"aud":["a","b"]}"#.utf8)).audiences == ["a", "b"])
        for bad in [#"{"exp":"tomorrow"}"#, #"{"aud":5}"#, #"{"iss":1}"#, #"[]"#] {
            #expect(throws: (any Error).self, "\(bad)") { try JSONDecoder().decode(TokenClaims.self, from: Data(bad.utf8)) }
        }
    }

    @Test("token header: alg and kid, or malformed; over 8 KiB refused before decoding")
    func tokenHeader() throws {
        let header = TestJWT.base64URL(Data(#"{"alg":"ES256","kid":"k1"}"#.utf8))
        let parsed = try TokenHeader(token: "\(header).e30.sig")
        #expect(parsed.algorithm == "ES256" && parsed.keyID == "k1")
        for bad in ["", "a.b", "a.b.c.d", "!!!.e30.x", "\(TestJWT.base64URL(Data(#"{"kid":"k"}"#.utf8))).e30.x", "e30.e30.x"] {
            #expect(throws: TokenRejection.malformed, "\(bad)") { try TokenHeader(token: bad) }
        }
        #expect(throws: TokenRejection.tooLarge) { try TokenHeader(token: "\(header).\(String(repeating: "a", count: 8200)).x") }
    }

    @Test("a verified token is remembered until it expires; an unknown or forged one never is")
    func verifiedTokensRemembered() async throws {
        let tokens = await UserTokens(secret: "a-test-secret-long-enough-for-hs256", provider: nil, leewaySeconds: 0)
        let token = try await tokens.mint(user: "alice", validFor: .seconds(60))
        #expect(try await tokens.user(fromToken: token) == "alice")
        #expect(try await tokens.user(fromToken: token) == "alice")
        // A different first signature character: its six bits all count (the last one's may be padding).
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        let signature = parts[2]
        let forged = [String(parts[0]), String(parts[1]), (signature.hasPrefix("A") ? "B" : "A") + String(signature.dropFirst())]
            .joined(separator: ".")
        await #expect(throws: TokenRejection.self) { try await tokens.user(fromToken: forged) }

        let cache = VerifiedTokens()
        cache.remember("t", user: "bob", until: 100)
        #expect(cache.user(of: "t", now: 99) == "bob")
        #expect(cache.user(of: "t", now: 100) == nil)
        #expect(cache.user(of: "t", now: 50) == nil)
        #expect(cache.user(of: "other", now: 1) == nil)
    }

    @Test("Cache-Control max-age sets the refresh interval, bounded to 5 min … 24 h")
    func refreshInterval() {
        #expect(RefreshTiming.standard.interval(cacheControl: nil) == .seconds(3600))
        #expect(RefreshTiming.standard.interval(cacheControl: "public, max-age=7200, must-revalidate") == .seconds(7200))
        #expect(RefreshTiming.standard.interval(cacheControl: "max-age=10") == .seconds(300))
        #expect(RefreshTiming.standard.interval(cacheControl: "max-age=9999999") == .seconds(86400))
        #expect(RefreshTiming.standard.interval(cacheControl: "no-store") == .seconds(300))
        #expect(RefreshTiming.standard.interval(cacheControl: "max-age=soon") == .seconds(3600))
    }

    @Test("unknown-kid refreshes: at most the limit within any window")
    func refreshBudget() {
        var budget = RefreshBudget(limit: 3, window: .seconds(60))
        let start = ContinuousClock.now
        let offsets = [0, 1, 2, 3, 4, 59, 60, 60]
        let granted = offsets.map { budget.spend(at: start + .seconds($0)) }
        // The fourth and later spends wait until the first leaves the window (at 60 s), which frees one.
        #expect(granted == [true, true, true, false, false, false, true, false])
    }

    @Test("key sets: a declared alg only; undeclared by key type and curve; enc keys, keys without kid and unknown types skipped")
    func keySetParsing() async throws {
        let rsa = try TestSigningKey(.rs256, keyID: "rsa-declared")
        let rsaOpen = try TestSigningKey(.rs256, keyID: "rsa-open")
        let ec = try TestSigningKey(.es256, keyID: "ec")
        let ed = try TestSigningKey(.eddsa, keyID: "ed")
        var encryption = try TestSigningKey(.rs256, keyID: "enc").jwk()
        encryption["use"] = "enc"
        var noKid = try TestSigningKey(.es256).jwk()
        noKid["kid"] = nil
        let unknownType: [String: String] = ["kty": "oct", "kid": "hmac", "k": "c2VjcmV0"]
        let keys = [try rsa.jwk(), try rsaOpen.jwk(declaresAlgorithm: false), try ec.jwk(declaresAlgorithm: false), try ed.jwk(), encryption, noKid, unknownType]
        let parsed = try await ProviderKeys.parse(Array(try JSONSerialization.data(withJSONObject: ["keys": keys])))
        #expect(parsed.keyIDs == ["rsa-declared", "rsa-open", "ec", "ed"])
        #expect(parsed.skipped.count == 3, "\(parsed.skipped)")
        func found(_ kid: String?, _ alg: String) -> String {
            switch parsed.lookup(keyID: kid, algorithm: alg) {
            case .found: "found"
            case .unknownKey: "unknown"
            case .algorithmDoesNotMatchKey: "mismatch"
            }
        }
        #expect(found("rsa-declared", "RS256") == "found")
        #expect(found("rsa-declared", "PS256") == "mismatch")
        #expect(found("rsa-open", "PS512") == "found")
        #expect(found("rsa-open", "ES256") == "mismatch")
        #expect(found("ec", "ES256") == "found")
        #expect(found("ec", "ES384") == "mismatch")
        #expect(found("ed", "EdDSA") == "found")
        #expect(found("enc", "RS256") == "unknown")
        #expect(found(nil, "RS256") == "unknown", "no kid with several keys")

        await #expect(throws: KeySetError.self) { try await ProviderKeys.parse(Array(#"{"keys":[]}"#.utf8)) }
        await #expect(throws: KeySetError.self) { try await ProviderKeys.parse(Array("<html>".utf8)) }
        await #expect(throws: KeySetError.self) { try await ProviderKeys.parse(Array(try JSONSerialization.data(withJSONObject: ["keys": [encryption]]))) }
    }

    @Test("a provider's tokens verify end to end; each failure has its reason; HS256 only with Herald's secret")
    func userTokensEndToEnd() async throws {
        let key = try TestSigningKey(.ps256)
        let issuer = try TestIssuer(keys: [try key.jwk()])
        defer { issuer.stop() }
        let http = try CurlHTTPClient(logger: Logger(label: "test"))
        defer { http.shutdown() }
        let settings = IdentityProviderSettings(keySource: .discovery(issuer: issuer.issuer), issuer: issuer.issuer, audiences: ["api"])
        let provider = ProviderKeySet(settings: settings, http: http, logger: Logger(label: "test"))
        try await provider.loadInitialKeys()
        let secret = "unit-tests-secret-0123456789abcdef-0123"
        let tokens = await UserTokens(secret: secret, provider: provider, leewaySeconds: 0)
        let providerOnly = await UserTokens(secret: nil, provider: provider, leewaySeconds: 0)
        let exp = TestJWT.now + 600
        let claims: [String: any Sendable] = ["sub": "u1", "iss": issuer.issuer, "aud": "api", "exp": exp]

        #expect(try await tokens.user(fromToken: try key.sign(claims)) == "u1")
        let minted = try await UserTokens(secret: secret).mint(user: "own", validFor: .seconds(60))
        #expect(try await tokens.user(fromToken: minted) == "own")
        #expect(try await tokens.user(fromToken: try TestJWT.hs256(["sub": "py", "exp": exp], secret: Data(secret.utf8))) == "py", "no iat needed")

        let failures: [(String, UserTokens, String, TokenRejection)] = [
            ("HS256 without a secret", providerOnly, minted, .algorithmNotAccepted),
            ("HS384", tokens, try key.sign(claims, algorithm: "HS384"), .algorithmNotAccepted),
            ("none", tokens, try TestJWT.unsigned(claims, keyID: key.keyID), .algorithmNotAccepted),
            ("HS256 with the public key", tokens, try TestJWT.hs256(claims, secret: Data(key.publicKeyPEM.utf8), keyID: key.keyID), .badSignature),
            ("RS256 header on the PS256 key", tokens, try key.sign(claims, algorithm: "RS256"), .algorithmDoesNotMatchKey),
            ("another payload under the signature", tokens, try swappedPayload(try key.sign(claims), ["sub": "admin", "exp": exp]), .badSignature),
            ("unknown kid", tokens, try key.sign(claims, keyID: "elsewhere"), .unknownKey),
        ]
        for (name, verifier, token, expected) in failures {
            await #expect(throws: expected, "\(name)") { try await verifier.user(fromToken: token) }
        }
        #expect(issuer.keySetRequests == 2, "the unknown kid refreshed once")
        #expect(await provider.state.keys == 1)
    }

    private func swappedPayload(_ token: String, _ claims: [String: any Sendable]) throws -> String {
        var parts = token.split(separator: ".").map(String.init)
        parts[1] = TestJWT.base64URL(try JSONSerialization.data(withJSONObject: claims))
        return parts.joined(separator: ".")
    }

    @Test("scheduled refreshes follow max-age: a changed key set is picked up without any token; a failure keeps the keys")
    func scheduledRefresh() async throws {
        let first = try TestSigningKey(.es256)
        let second = try TestSigningKey(.eddsa)
        let issuer = try TestIssuer(keys: [try first.jwk()], cacheControl: "max-age=0")
        defer { issuer.stop() }
        let http = try CurlHTTPClient(logger: Logger(label: "test"))
        defer { http.shutdown() }
        // The standard bounds (5 min … 24 h) shrunk to milliseconds.
        var timing = RefreshTiming.standard
        timing.minimumInterval = .milliseconds(50)
        timing.retryAfterFailure = .milliseconds(50)
        let provider = ProviderKeySet(
            settings: IdentityProviderSettings(keySource: .jwks(url: issuer.jwksURL)), http: http, logger: Logger(label: "test"), timing: timing
        )
        try await provider.loadInitialKeys()
        let scheduler = Task { try await provider.run() }
        defer { scheduler.cancel() }

        try issuer.publish([try first.jwk(), try second.jwk()])
        #expect(await eventually { await provider.state.keys == 2 }, "the new key set was fetched on schedule")

        issuer.setUp(false)
        #expect(await eventually { await provider.state.lastRefreshError == "\(issuer.jwksURL): HTTP status 503" })
        #expect(await provider.state.keys == 2, "the last good keys are kept")
        _ = try await provider.keys(keyID: second.keyID, algorithm: "EdDSA")

        issuer.setUp(true)
        #expect(await eventually { await provider.state.lastRefreshError == nil }, "the next scheduled refresh succeeds")
    }

    /// Polls `condition` every 10 ms until it holds or 20 s pass (a loaded machine runs the refresh schedule late).
    private func eventually(_ condition: () async -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return await condition()
    }

    @Test("start-up gives up after its timeout with one line naming the URL")
    func startupTimeout() async throws {
        let issuer = try TestIssuer(keys: [])
        defer { issuer.stop() }
        let http = try CurlHTTPClient(logger: Logger(label: "test"))
        defer { http.shutdown() }
        let settings = IdentityProviderSettings(keySource: .jwks(url: issuer.jwksURL), startupTimeoutSeconds: 0.5)
        let provider = ProviderKeySet(settings: settings, http: http, logger: Logger(label: "test"))
        do {
            try await provider.loadInitialKeys()
            Issue.record("an empty key set was accepted")
        } catch {
            #expect(error.description == "cannot load the identity provider's signing keys within 0.5 s from \(issuer.jwksURL): the key set has no usable signing key")
        }
    }
}
