// A local OpenID-Connect-like identity provider for tests: a discovery document and a JSON Web Key Set over
// HTTP (TestHTTPServer), keys generated with swift-crypto, and tokens signed by hand from RFC 7515/7518
// (independent of jwt-kit, which Herald verifies with).

import Crypto
import CryptoExtras
import Foundation

/// A signing key of the test issuer.
public struct TestSigningKey: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case rs256 = "RS256", ps256 = "PS256", es256 = "ES256", eddsa = "EdDSA"
    }

    enum Material: Sendable {
        case rsa(_RSA.Signing.PrivateKey)
        case p256(P256.Signing.PrivateKey)
        case ed25519(Curve25519.Signing.PrivateKey)
    }

    public let kind: Kind
    public let keyID: String
    let material: Material

    /// A fresh key; RSA keys are 2048 bits.
    public init(_ kind: Kind, keyID: String? = nil) throws {
        self.kind = kind
        self.keyID = keyID ?? "\(kind.rawValue.lowercased())-\(UUID().uuidString.prefix(8))"
        switch kind {
        case .rs256, .ps256: material = .rsa(try _RSA.Signing.PrivateKey(keySize: .bits2048))
        case .es256: material = .p256(P256.Signing.PrivateKey())
        case .eddsa: material = .ed25519(Curve25519.Signing.PrivateKey())
        }
    }

    /// From a PEM private key (RSA, P-256 or Ed25519 in PKCS#8), for committed fixtures.
    public init(_ kind: Kind, keyID: String, pem: String) throws {
        self.kind = kind
        self.keyID = keyID
        switch kind {
        case .rs256, .ps256: material = .rsa(try _RSA.Signing.PrivateKey(pemRepresentation: pem))
        case .es256: material = .p256(try P256.Signing.PrivateKey(pemRepresentation: pem))
        case .eddsa: material = .ed25519(try Curve25519.Signing.PrivateKey(pemRepresentation: pem))
        }
    }

    /// The public JWK. `declaresAlgorithm: false` leaves out `alg`, as some providers do.
    public func jwk(declaresAlgorithm: Bool = true) throws -> [String: String] {
        var jwk: [String: String] = ["kid": keyID, "use": "sig"]
        if declaresAlgorithm { jwk["alg"] = kind.rawValue }
        switch material {
        case .rsa(let key):
            let primitives = try key.publicKey.getKeyPrimitives()
            jwk["kty"] = "RSA"
            jwk["n"] = TestJWT.base64URL(primitives.modulus)
            jwk["e"] = TestJWT.base64URL(primitives.publicExponent)
        case .p256(let key):
            let point = key.publicKey.rawRepresentation
            jwk["kty"] = "EC"
            jwk["crv"] = "P-256"
            jwk["x"] = TestJWT.base64URL(point.prefix(32))
            jwk["y"] = TestJWT.base64URL(point.suffix(32))
        case .ed25519(let key):
            jwk["kty"] = "OKP"
            jwk["crv"] = "Ed25519"
            jwk["x"] = TestJWT.base64URL(key.publicKey.rawRepresentation)
        }
        return jwk
    }

    /// The public key as PEM (SubjectPublicKeyInfo): what an algorithm-confusion attacker uses as an HMAC secret.
    public var publicKeyPEM: String {
        switch material {
        case .rsa(let key): key.publicKey.pemRepresentation
        case .p256(let key): key.publicKey.pemRepresentation
        case .ed25519(let key): key.publicKey.pemRepresentation
        }
    }

    /// A signed compact JWT. `algorithm` overrides the header's `alg` (the signature is still this key's own).
    /// `keyID`: left out, this key's `kid`; `.some(nil)`, no `kid` in the header.
    public func sign(_ claims: [String: any Sendable], algorithm: String? = nil, keyID: String?? = .none) throws -> String {
        var header: [String: String] = ["alg": algorithm ?? kind.rawValue, "typ": "JWT"]
        let kid: String? = switch keyID {
        case .none: self.keyID
        case .some(let given): given
        }
        if let kid { header["kid"] = kid }
        let input = try TestJWT.signingInput(header: header, claims: claims)
        let signature: Data = switch material {
        case .rsa(let key):
            try key.signature(for: SHA256.hash(data: Data(input.utf8)), padding: kind == .ps256 ? .PSS : .insecurePKCS1v1_5).rawRepresentation
        case .p256(let key): try key.signature(for: Data(input.utf8)).rawRepresentation
        case .ed25519(let key): try key.signature(for: Data(input.utf8))
        }
        return input + "." + TestJWT.base64URL(signature)
    }
}

/// Compact JWS helpers.
public enum TestJWT {
    public static func base64URL(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func signingInput(header: [String: String], claims: [String: any Sendable]) throws -> String {
        let headerJSON = try JSONSerialization.data(withJSONObject: header, options: .sortedKeys)
        let claimsJSON = try JSONSerialization.data(withJSONObject: claims.mapValues { $0 as Any }, options: .sortedKeys)
        return base64URL(headerJSON) + "." + base64URL(claimsJSON)
    }

    /// HS256 with any secret bytes (for algorithm-confusion attacks).
    public static func hs256(_ claims: [String: any Sendable], secret: Data, keyID: String? = nil) throws -> String {
        var header = ["alg": "HS256", "typ": "JWT"]
        if let keyID { header["kid"] = keyID }
        let input = try signingInput(header: header, claims: claims)
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: secret))
        return input + "." + base64URL(Data(mac))
    }

    /// `alg: none`, no signature.
    public static func unsigned(_ claims: [String: any Sendable], keyID: String? = nil) throws -> String {
        var header = ["alg": "none", "typ": "JWT"]
        if let keyID { header["kid"] = keyID }
        return try signingInput(header: header, claims: claims) + "."
    }

    /// Seconds since 1970, now.
    public static var now: Int { Int(Date().timeIntervalSince1970) }
}

/// The identity provider: serves `/.well-known/openid-configuration` and `/jwks.json`, counts the requests,
/// and can change its keys or go down.
public final class TestIssuer: Sendable {
    private let server: TestHTTPServer
    private let state: LockedState

    /// Per-request state; the server calls the handler from its connection threads.
    private final class LockedState: @unchecked Sendable {  // every field is read and written under `lock`
        let lock = NSLock()
        var keySet = Data()
        var up = true
        var cacheControl: String?
        var issuer = ""
    }

    public var url: String { server.url }
    /// The `issuer` value: the server's URL (no trailing slash).
    public var issuer: String { server.url }
    public var jwksURL: String { server.url + "/jwks.json" }

    public convenience init(keys: [[String: String]], cacheControl: String? = nil) throws {
        try self.init(keySetJSON: try Self.keySetJSON(keys), cacheControl: cacheControl)
    }

    /// Serves `keySetJSON` as it is (a JWKS document from elsewhere).
    public init(keySetJSON: Data, cacheControl: String? = nil) throws {
        let state = LockedState()
        state.keySet = keySetJSON
        state.cacheControl = cacheControl
        self.state = state
        self.server = try TestHTTPServer { request, _ in
            let (keySet, up, cacheControl, issuer) = state.lock.withLock { (state.keySet, state.up, state.cacheControl, state.issuer) }
            guard up else { return .respond(status: 503, body: Array("down".utf8)) }
            let json = [(name: "Content-Type", value: "application/json")]
            switch request.path {
            case "/.well-known/openid-configuration":
                let document: [String: Any] = ["issuer": issuer, "jwks_uri": issuer + "/jwks.json"]
                return .respond(status: 200, headers: json, body: Array((try? JSONSerialization.data(withJSONObject: document)) ?? Data()))
            case "/jwks.json":
                return .respond(status: 200, headers: json + (cacheControl.map { [(name: "Cache-Control", value: $0)] } ?? []), body: Array(keySet))
            default:
                return .respond(status: 404)
            }
        }
        state.lock.withLock { state.issuer = server.url }
    }

    /// Replaces the published keys (a rotation).
    public func publish(_ keys: [[String: String]]) throws {
        let keySet = try Self.keySetJSON(keys)
        state.lock.withLock { state.keySet = keySet }
    }

    private static func keySetJSON(_ keys: [[String: String]]) throws -> Data {
        try JSONSerialization.data(withJSONObject: ["keys": keys])
    }

    /// While down, every request gets `503`.
    public func setUp(_ up: Bool) {
        state.lock.withLock { state.up = up }
    }

    /// Requests for the key set so far (discovery not counted).
    public var keySetRequests: Int { server.requests.filter { $0.path == "/jwks.json" }.count }
    public var discoveryRequests: Int { server.requests.filter { $0.path == "/.well-known/openid-configuration" }.count }

    public func stop() { server.stop() }
}
