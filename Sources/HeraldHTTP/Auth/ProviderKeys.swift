import Foundation
import JWTKit

/// One JSON Web Key Set, ready to verify with: for each algorithm, the keys allowed to verify it.
///
/// A key verifies only the algorithm it declares (`alg`), or without a declaration those of its type and curve
/// (RSA: RS*/PS*; EC: the ES* of its curve; OKP Ed25519: EdDSA). So a token cannot choose an algorithm its key
/// was not made for, and there is no HMAC or `none` here at all (algorithm confusion). Keys for encryption
/// (`use: enc`), without `kid`, or of a kind jwt-kit cannot read are skipped.
struct ProviderKeys: Sendable {
    static let supportedAlgorithms: Set<String> = [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    ]

    /// jwt-kit falls back to a collection's default key when a `kid` is not in it, so each collection holds
    /// only the keys of one algorithm and `keyIDsByAlgorithm` is consulted first.
    private let collections: [String: JWTKeyCollection]
    private let keyIDsByAlgorithm: [String: Set<String>]
    let keyIDs: Set<String>
    /// Why each skipped key was skipped, for the log.
    let skipped: [String]

    static let empty = ProviderKeys(collections: [:], keyIDsByAlgorithm: [:], keyIDs: [], skipped: [])

    enum Lookup {
        case found(JWTKeyCollection)
        case unknownKey
        case algorithmDoesNotMatchKey
    }

    /// The keys that may verify a token with this header. A token without `kid` is only matched when the set
    /// has a single key.
    func lookup(keyID: String?, algorithm: String) -> Lookup {
        guard let keyID = keyID ?? (keyIDs.count == 1 ? keyIDs.first : nil), keyIDs.contains(keyID) else { return .unknownKey }
        guard let collection = collections[algorithm], keyIDsByAlgorithm[algorithm]?.contains(keyID) == true else {
            return .algorithmDoesNotMatchKey
        }
        return .found(collection)
    }

    /// Parses a JWKS document (`{"keys": [...]}`); throws when it is not one or holds no usable signing key.
    static func parse(_ body: [UInt8]) async throws(KeySetError) -> ProviderKeys {
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(body))
        } catch {
            throw KeySetError("the response is not a JSON Web Key Set")
        }
        var collections: [String: JWTKeyCollection] = [:]
        var keyIDsByAlgorithm: [String: Set<String>] = [:]
        var skipped: [String] = []
        for (index, entry) in document.keys.enumerated() {
            let name = entry.kid.map { "key \($0)" } ?? "key #\(index)"
            guard let kid = entry.kid else { skipped.append("\(name): no kid"); continue }
            guard entry.use != "enc" else { skipped.append("\(name): an encryption key"); continue }
            guard let jwk = entry.jwk else { skipped.append("\(name): not a key jwt-kit can read"); continue }
            let algorithms = entry.allowedAlgorithms
            guard !algorithms.isEmpty else { skipped.append("\(name): no supported algorithm"); continue }
            for algorithm in algorithms.sorted() {
                guard let declared = JWK.Algorithm(rawValue: algorithm) else { continue }
                var key = jwk
                key.algorithm = declared
                let collection = collections[algorithm] ?? JWTKeyCollection()
                do {
                    try await collection.add(jwk: key)
                } catch {
                    skipped.append("\(name): invalid \(algorithm) key material")
                    continue
                }
                collections[algorithm] = collection
                keyIDsByAlgorithm[algorithm, default: []].insert(kid)
            }
        }
        let keyIDs = keyIDsByAlgorithm.values.reduce(into: Set<String>()) { $0.formUnion($1) }
        guard !keyIDs.isEmpty else {
            throw KeySetError("the key set has no usable signing key" + (skipped.isEmpty ? "" : " (\(skipped.joined(separator: "; ")))"))
        }
        return ProviderKeys(collections: collections, keyIDsByAlgorithm: keyIDsByAlgorithm, keyIDs: keyIDs, skipped: skipped)
    }

    private struct Document: Decodable {
        let keys: [Entry]
    }

    /// One key: jwt-kit's reading of it (nil when it cannot read it) and the members that decide its use.
    private struct Entry: Decodable {
        let jwk: JWK?
        let kid: String?
        let use: String?
        let alg: String?
        let kty: String?
        let crv: String?

        private enum CodingKeys: String, CodingKey { case kid, use, alg, kty, crv }

        init(from decoder: any Decoder) throws {
            jwk = try? JWK(from: decoder)
            let container = try decoder.container(keyedBy: CodingKeys.self)
            kid = try? container.decodeIfPresent(String.self, forKey: .kid)
            use = try? container.decodeIfPresent(String.self, forKey: .use)
            alg = try? container.decodeIfPresent(String.self, forKey: .alg)
            kty = try? container.decodeIfPresent(String.self, forKey: .kty)
            crv = try? container.decodeIfPresent(String.self, forKey: .crv)
        }

        var allowedAlgorithms: Set<String> {
            let byType: Set<String> = switch (kty, crv) {
            case ("RSA", _): ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
            case ("EC", "P-256"): ["ES256"]
            case ("EC", "P-384"): ["ES384"]
            case ("EC", "P-521"): ["ES512"]
            case ("OKP", "Ed25519"): ["EdDSA"]
            default: []
            }
            guard let alg else { return byType }
            return byType.contains(alg) ? [alg] : []
        }
    }
}

/// A key set that could not be fetched or read; `description` is one line.
struct KeySetError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
