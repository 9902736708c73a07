import Foundation
import HeraldTestSupport
import Testing

/// Tokens from an identity provider, verified with the keys of its JWKS (fetched from a local test issuer),
/// alongside Herald's own HS256 tokens.
@Suite("identity providers: OIDC discovery, JWKS, rotation, outages", .serialized, .timeLimit(.minutes(3)))
struct IdentityProviderTests {
    /// `GET /chats` with `token` as a bearer token.
    static func listThreads(_ stack: Stack, token: String) async throws -> TestHTTPResponse {
        try await API(stack.url, token: token).request("GET", "/chats")
    }

    static func expectInvalidToken(_ response: TestHTTPResponse, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(response.status == 401, "\(name): \(response.status) \(response.text)", sourceLocation: sourceLocation)
        let challenge = response.header("WWW-Authenticate") ?? ""
        #expect(challenge.hasPrefix(#"Bearer error="invalid_token", error_description=""#), "\(name): \(challenge)", sourceLocation: sourceLocation)
        #expect(challenge.hasSuffix(#"""#) && challenge.count > 60, "\(name): \(challenge)", sourceLocation: sourceLocation)
    }

    @Test("an identity provider without a secret: only provider tokens sign in, and no development token route exists")
    func providerOnly() async throws {
        let rsa = try TestSigningKey(.rs256)
        let issuer = try TestIssuer(keys: [try rsa.jwk()])
        defer { issuer.stop() }
        try await withStack(agent: .unreachable, environment: ["HERALD_JWT_ISSUER": issuer.issuer, "HERALD_JWT_SECRET": ""]) { stack in
            let mint = try await TestHTTPClient.request("POST", "\(stack.url)/dev/token", json: #"{"user":"mallory"}"#)
            #expect(mint.status == 404, "\(mint.status) \(mint.text)")
            Self.expectInvalidToken(try await Self.listThreads(stack, token: try #require(stack.tokens["alice"])), "an HS256 token with no secret set")
            let token = try rsa.sign(["sub": "carol", "iss": issuer.issuer, "exp": TestJWT.now + 600])
            #expect(try await Self.listThreads(stack, token: token).status == 200)
        }
    }

    @Test("OIDC discovery: RS256, PS256, ES256 and EdDSA accepted; wrong iss/aud, expired, nbf, unknown kid, alg mismatch, alg none, HS256 with the public key: 401")
    func discoveryMatrix() async throws {
        let rsa = try TestSigningKey(.rs256)
        let pss = try TestSigningKey(.ps256)
        let ecdsa = try TestSigningKey(.es256)
        let eddsa = try TestSigningKey(.eddsa)
        let issuer = try TestIssuer(keys: [try rsa.jwk(), try pss.jwk(), try ecdsa.jwk(), try eddsa.jwk()])
        defer { issuer.stop() }
        let environment = [
            "HERALD_JWT_ISSUER": issuer.issuer, "HERALD_JWT_AUDIENCE": "herald-api other-api", "HERALD_JWT_LEEWAY_SECONDS": "60",
        ]
        try await withStack(agent: .unreachable, environment: environment) { stack in
            #expect(issuer.discoveryRequests == 1 && issuer.keySetRequests == 1, "start-up fetched discovery and keys once")
            let now = TestJWT.now
            func claims(_ user: String, _ changes: [String: (any Sendable)?] = [:]) -> [String: any Sendable] {
                var claims: [String: any Sendable] = ["sub": user, "iss": issuer.issuer, "aud": "herald-api", "exp": now + 600]
                for (name, value) in changes { claims[name] = value }
                return claims
            }

            let accepted: [(String, String)] = [
                ("RS256", try rsa.sign(claims("rs-user"))),
                ("PS256, aud array", try pss.sign(claims("ps-user", ["aud": ["someone", "other-api"]]))),
                ("ES256, nbf and iat now", try ecdsa.sign(claims("es-user", ["nbf": now, "iat": now]))),
                ("EdDSA", try eddsa.sign(claims("ed-user"))),
                ("expired within the leeway", try rsa.sign(claims("rs-user", ["exp": now - 20]))),
                ("Herald's own HS256 alongside", try #require(stack.tokens["alice"])),
            ]
            for (name, token) in accepted {
                let response = try await Self.listThreads(stack, token: token)
                #expect(response.status == 200, "\(name): \(response.status) \(response.header("WWW-Authenticate") ?? "")")
            }

            let stranger = try TestSigningKey(.rs256)
            let rejected: [(String, String)] = [
                ("wrong issuer", try rsa.sign(claims("u", ["iss": "https://issuer.example"]))),
                ("no issuer", try rsa.sign(claims("u", ["iss": nil]))),
                ("wrong audience", try rsa.sign(claims("u", ["aud": "someone-else"]))),
                ("no audience", try rsa.sign(claims("u", ["aud": nil]))),
                ("expired beyond the leeway", try rsa.sign(claims("u", ["exp": now - 120]))),
                ("no exp", try rsa.sign(claims("u", ["exp": nil]))),
                ("not yet valid", try ecdsa.sign(claims("u", ["nbf": now + 300]))),
                ("issued in the future", try eddsa.sign(claims("u", ["iat": now + 300]))),
                ("alg mismatch: PS256 header on the RS256 key", try rsa.sign(claims("u"), algorithm: "PS256")),
                ("alg mismatch: ES256 header on an RSA key", try rsa.sign(claims("u"), algorithm: "ES256")),
                ("alg none", try TestJWT.unsigned(claims("u"), keyID: rsa.keyID)),
                ("HS256 signed with the RSA public key", try TestJWT.hs256(claims("u"), secret: Data(rsa.publicKeyPEM.utf8), keyID: rsa.keyID)),
                ("HS256 signed with the EdDSA public key", try TestJWT.hs256(claims("u"), secret: Data(eddsa.publicKeyPEM.utf8), keyID: eddsa.keyID)),
                ("a published kid, another key's signature", try stranger.sign(claims("u"), keyID: rsa.keyID)),
                ("no user", try rsa.sign(claims("", ["sub": nil]))),
                ("over 8 KiB", try rsa.sign(claims("u", ["padding": String(repeating: "x", count: 9000)]))),
            ]
            for (name, token) in rejected {
                Self.expectInvalidToken(try await Self.listThreads(stack, token: token), name)
            }
            #expect(issuer.keySetRequests == 1, "no rejection above needed a refresh")

            // An unknown kid makes Herald look for a rotated key set once; the kid is still unknown: 401.
            Self.expectInvalidToken(try await Self.listThreads(stack, token: try stranger.sign(claims("u"))), "unknown kid")
            #expect(issuer.keySetRequests == 2)

            let missing = try await API(stack.url, token: nil).request("GET", "/chats")
            #expect(missing.status == 401 && missing.header("WWW-Authenticate") == "Bearer", "no token: a bare challenge (RFC 6750 §3.1)")

            let ready = try API(stack.url, token: nil).json(try await TestHTTPClient.request("GET", "\(stack.url)/readyz"))
            let keys = try #require(ready["signing_keys"] as? [String: Any], "\(ready)")
            #expect(keys["keys"] as? Int == 4)
            #expect(keys["url"] as? String == issuer.jwksURL)
            #expect(keys["age_seconds"] is Int)
            #expect(keys["last_refresh_error"] == nil)
        }
    }

    @Test("rotation: a new key's tokens pass after the unknown-kid refresh; the issuer down later keeps the last keys; a kid flood is rate-limited")
    func rotationOutageAndFlood() async throws {
        let old = try TestSigningKey(.es256)
        let new = try TestSigningKey(.rs256)
        let issuer = try TestIssuer(keys: [try old.jwk(declaresAlgorithm: false)], cacheControl: "public, max-age=3600")
        defer { issuer.stop() }
        let environment = ["HERALD_JWT_JWKS_URL": issuer.jwksURL, "HERALD_JWT_USER_CLAIM": "uid"]
        try await withStack(agent: .unreachable, environment: environment) { stack in
            let start = ContinuousClock.now
            func token(_ key: TestSigningKey, user: String = "carol", keyID: String?? = .none) throws -> String {
                try key.sign(["uid": user, "sub": "ignored-\(UUID())", "exp": TestJWT.now + 600], keyID: keyID)
            }
            let thread = try await API(stack.url, token: try token(old)).createThread()
            #expect(issuer.keySetRequests == 1)

            try issuer.publish([try new.jwk()])
            let afterRotation = try await Self.listThreads(stack, token: try token(new))
            #expect(afterRotation.status == 200, "\(afterRotation.text)")
            #expect(afterRotation.text.contains(thread), "the user claim (uid) names the same user across keys")
            #expect(issuer.keySetRequests == 2, "one refresh for the new kid")

            issuer.setUp(false)
            Self.expectInvalidToken(try await Self.listThreads(stack, token: try token(new, keyID: "not-published")), "unknown kid, issuer down")
            #expect(issuer.keySetRequests == 3, "the refresh was tried")
            #expect(try await Self.listThreads(stack, token: try token(new)).status == 200, "the last good keys still verify")
            #expect(try await API(stack.url, token: nil).metric("herald_jwks_refresh_failures_total") == 1)
            let ready = try API(stack.url, token: nil).json(try await TestHTTPClient.request("GET", "\(stack.url)/readyz"))
            let keys = try #require(ready["signing_keys"] as? [String: Any], "\(ready)")
            #expect((keys["last_refresh_error"] as? String)?.contains("503") == true, "\(keys)")
            #expect(keys["keys"] as? Int == 1)
            issuer.setUp(true)

            for index in 0..<40 {
                Self.expectInvalidToken(try await Self.listThreads(stack, token: try token(new, keyID: "random-\(index)-\(UUID())")), "flood \(index)")
            }
            // At most 3 unknown-kid refreshes in any minute (plus the start-up fetch), however long this took.
            let minutes = Int(((ContinuousClock.now - start) / .seconds(60)).rounded(.up))
            #expect(issuer.keySetRequests <= 1 + 3 * max(1, minutes), "\(issuer.keySetRequests) key set requests")
            #expect(try await Self.listThreads(stack, token: try token(new)).status == 200)
        }
    }

    @Test("the issuer down at start-up: one line naming the URL, exit code 2")
    func issuerDownAtStartup() async throws {
        let port = freeTCPPort()
        let process = try ChildProcess.start(
            builtProduct("herald"), ["serve"],
            environment: [
                "HERALD_JWT_ISSUER": "http://127.0.0.1:\(port)", "HERALD_JWT_STARTUP_TIMEOUT_SECONDS": "1",
                "HERALD_PORT": String(freeTCPPort()), "REDIS_URL": "redis://127.0.0.1:1", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            ]
        )
        let status = try await process.waitForExit(timeout: .seconds(20))
        #expect(status == 2, "\(process.log())")
        let errors = process.log().split(separator: "\n").filter { $0.hasPrefix("herald: ") }
        #expect(errors.count == 1, "\(process.log())")
        let line = try #require(errors.first)
        #expect(line.contains("cannot load the identity provider's signing keys"))
        #expect(line.contains("http://127.0.0.1:\(port)/.well-known/openid-configuration"), "\(line)")
    }

    /// Tests/HeraldIntegrationTests/Fixtures/pyjwt-vectors.json, made by scripts/generate-jwt-vectors.py.
    struct PyJWTVectors: Decodable {
        struct Vector: Decodable {
            let alg: String
            let user: String
            let token: String
        }
        let generator: String
        let hs256Secret: String
        let tokens: [Vector]
        /// The `jwks` member as PyJWT wrote it.
        var keySetJSON = Data()

        enum CodingKeys: String, CodingKey {
            case generator, tokens
            case hs256Secret = "hs256_secret"
        }

        static func load() throws -> PyJWTVectors {
            let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/pyjwt-vectors.json")
            let data = try Data(contentsOf: url)
            var vectors = try JSONDecoder().decode(PyJWTVectors.self, from: data)
            let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            vectors.keySetJSON = try JSONSerialization.data(withJSONObject: try #require(document["jwks"]))
            return vectors
        }
    }

    @Test("PyJWT tokens with only sub and exp (RS256, PS256, ES256, EdDSA, HS256) pass as header, access_token query and cookie")
    func pyJWTVectors() async throws {
        let vectors = try PyJWTVectors.load()
        #expect(Set(vectors.tokens.map(\.alg)) == ["RS256", "PS256", "ES256", "EdDSA", "HS256"], "\(vectors.generator)")
        let issuer = try TestIssuer(keySetJSON: vectors.keySetJSON)
        defer { issuer.stop() }
        let environment = ["HERALD_JWT_JWKS_URL": issuer.jwksURL, "HERALD_JWT_SECRET": vectors.hs256Secret]
        try await withStack(agent: .unreachable, environment: environment) { stack in
            for vector in vectors.tokens {
                let thread = try await API(stack.url, token: vector.token).createThread(title: vector.user)
                let byHeader = try await Self.listThreads(stack, token: vector.token)
                let byQuery = try await TestHTTPClient.request("GET", "\(stack.url)/chats?access_token=\(vector.token)")
                let byCookie = try await TestHTTPClient.request("GET", "\(stack.url)/chats", headers: [("Cookie", "access_token=\(vector.token)")])
                for (transport, response) in [("header", byHeader), ("query", byQuery), ("cookie", byCookie)] {
                    #expect(response.status == 200, "\(vector.alg) by \(transport): \(response.status) \(response.header("WWW-Authenticate") ?? "")")
                    #expect(response.text.contains(thread), "\(vector.alg) by \(transport): the same user")
                }
            }
        }
    }
}
