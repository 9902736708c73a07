import NIOCore

/// A RESP2 reply.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    /// An error reply. `RedisConnection.send` and `RedisClient.send` throw `RedisError.server` instead of returning
    /// it at the top level; it can still appear nested in arrays (e.g. EXEC results).
    case error(String)
    case integer(Int)
    case bulkString(ByteBuffer)
    /// Null bulk string or null array.
    case null
    case array([RESPValue])

    /// A simple or bulk string as UTF-8 (invalid sequences repaired).
    public var string: String? {
        switch self {
        case .simpleString(let string): string
        case .bulkString(let buffer): String(buffer: buffer)
        default: nil
        }
    }

    /// An integer, or a simple/bulk string holding a decimal integer.
    public var int: Int? {
        switch self {
        case .integer(let value): value
        case .simpleString(let string): Int(string)
        case .bulkString(let buffer): Int(String(buffer: buffer))
        default: nil
        }
    }

    public var array: [RESPValue]? {
        if case .array(let values) = self { values } else { nil }
    }

    /// The bytes of a bulk string.
    public var buffer: ByteBuffer? {
        if case .bulkString(let buffer) = self { buffer } else { nil }
    }

    public var isNull: Bool {
        if case .null = self { true } else { false }
    }
}

extension RESPValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .simpleString(let string): "+\(string)"
        case .error(let message): "-\(message)"
        case .integer(let value): ":\(value)"
        case .bulkString(let buffer): "$\(String(reflecting: String(buffer: buffer)))"
        case .null: "(nil)"
        case .array(let values): "[\(values.map(\.description).joined(separator: ", "))]"
        }
    }
}

/// One argument of a command: text (sent as UTF-8) or raw bytes.
public enum RedisArgument: Sendable, ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    case string(String)
    case bytes(ByteBuffer)

    public init(stringLiteral value: String) {
        self = .string(value)
    }

    public init(stringInterpolation: DefaultStringInterpolation) {
        self = .string(String(stringInterpolation: stringInterpolation))
    }

    /// A decimal integer argument.
    public static func int(_ value: Int) -> RedisArgument {
        .string(String(value))
    }
}

public enum RedisError: Error, Sendable, Equatable {
    /// `RedisConfiguration(url:)` could not parse the URL; the reason says why.
    case invalidURL(String)
    /// Redis answered with an error reply (e.g. `ERR unknown command`, `WRONGTYPE ...`, `NOSCRIPT ...`).
    case server(String)
    /// The connection closed while the command was in flight.
    case connectionClosed
    /// There is no connection (it could not be established, or the client/subscriber was closed).
    case notConnected
    /// Redis sent something the RESP parser rejects, or a reply nobody asked for.
    case protocolError(String)
    /// Connecting (TCP connect and AUTH/SELECT/SETNAME) or a subscription confirmation took too long.
    case timeout
    /// TLS could not be set up or its handshake failed (an unknown CA, a name the certificate does not cover, a
    /// server that does not speak TLS); the reason says which.
    case tls(String)
}

extension RedisError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .invalidURL(let reason): "invalid Redis URL: \(reason)"
        case .server(let message): "Redis error: \(message)"
        case .connectionClosed: "Redis connection closed"
        case .notConnected: "not connected to Redis"
        case .protocolError(let reason): "Redis protocol error: \(reason)"
        case .timeout: "Redis timeout"
        case .tls(let reason): "Redis TLS: \(reason)"
        }
    }
}
