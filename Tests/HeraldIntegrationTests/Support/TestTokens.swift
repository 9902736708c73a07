import Crypto
import Foundation

/// JSON Web Tokens built by hand from RFC 7519, independent of jwt-kit, to attack Herald with.
enum TestTokens {
    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func hs256(user: String, expiresIn seconds: Int = 3600, secret: String = Stack.jwtSecret) -> String {
        let header = base64URL(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let now = Int(Date().timeIntervalSince1970)
        let payload = base64URL(Data(#"{"sub":"\#(user)","iat":\#(now),"exp":\#(now + seconds)}"#.utf8))
        let signature = HMAC<SHA256>.authenticationCode(for: Data("\(header).\(payload)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return "\(header).\(payload).\(base64URL(Data(signature)))"
    }

    /// `alg: none`, unsigned: the classic forgery.
    static func unsigned(user: String) -> String {
        let header = base64URL(Data(#"{"alg":"none","typ":"JWT"}"#.utf8))
        let now = Int(Date().timeIntervalSince1970)
        let payload = base64URL(Data(#"{"sub":"\#(user)","iat":\#(now),"exp":\#(now + 3600)}"#.utf8))
        return "\(header).\(payload)."
    }
}
