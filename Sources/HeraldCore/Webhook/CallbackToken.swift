import Crypto
import Foundation

/// The credential in the callback URL handed to engines that cannot sign (LangGraph): 32 random bytes,
/// base64url. Only its SHA-256 is stored; it is bound to one run (and so one thread) and accepted only while
/// that run can still take results.
public struct CallbackToken: Sendable {
    public let value: String

    public init() {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        value = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    public var hash: String { Self.hash(value) }

    public static func hash(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Constant-time comparison of a presented token with a stored hash.
    public static func matches(_ token: String, storedHash: String) -> Bool {
        let presented = Array(hash(token).utf8), stored = Array(storedHash.utf8)
        guard presented.count == stored.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(presented, stored) { difference |= a ^ b }
        return difference == 0
    }
}
