/// Where and how to connect to Redis.
public struct RedisConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    /// ACL user name (Redis 6+); only used together with `password`.
    public var username: String?
    public var password: String?
    public var database: Int
    /// TLS for every connection (commands and the subscriber) when set: `rediss://`.
    public var tls: TLS?

    /// Where the client connects, for logs: the URL without credentials, and how TLS is checked.
    public var endpointDescription: String {
        let scheme = tls == nil ? "redis" : "rediss"
        return "\(scheme)://\(RedisEndpoint(host: host, port: port))/\(database)" + tlsDescription
    }

    /// How TLS is checked, for logs (empty without TLS).
    var tlsDescription: String {
        guard let tls else { return "" }
        if !tls.verifiesServer { return " (TLS, NOT verified)" }
        return " (TLS, verified against " + (tls.caFile ?? "the system's trust store") + ")"
    }

    /// How Redis's certificate is checked, and the client's own.
    public struct TLS: Sendable, Hashable {
        /// PEM file of the CA that signed the server's certificate; nil trusts the system's store.
        public var caFile: String?
        /// PEM files of a client certificate and its key, for servers that ask for one (`tls-auth-clients`).
        public var certificateFile: String?
        public var keyFile: String?
        /// Skips verifying the server's certificate and name. Only for trying things out.
        public var verifiesServer: Bool

        public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, verifiesServer: Bool = true) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.verifiesServer = verifiesServer
        }
    }

    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        tls: TLS? = nil
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// Parses `redis://[[username]:password@]host[:port][/db]`, or `rediss://…` for TLS (server verified against
    /// the system's trust store; see `TLS` for the rest).
    ///
    /// User name and password may be percent-encoded; an IPv6 host is written in brackets (`redis://[::1]:6379`).
    /// Throws `RedisError.invalidURL(reason)` for anything else (other schemes, query strings, a user name without a
    /// password, a bad port or database number).
    public init(url: String) throws {
        let lowercased = url.lowercased()
        let secure = lowercased.hasPrefix("rediss://")
        guard secure || lowercased.hasPrefix("redis://") else {
            throw RedisError.invalidURL("the URL must start with redis:// or rediss://")
        }
        let rest = url.dropFirst(secure ? 9 : 8)
        if rest.contains("?") || rest.contains("#") {
            throw RedisError.invalidURL("query strings and fragments are not supported")
        }

        let authority: Substring
        let path: Substring?
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        } else {
            authority = rest
            path = nil
        }

        var username: String?
        var password: String?
        let hostAndPort: Substring
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            hostAndPort = authority[authority.index(after: at)...]
            guard let colon = userInfo.firstIndex(of: ":") else {
                throw RedisError.invalidURL("the user info must be [username]:password")
            }
            let user = try Self.percentDecoded(userInfo[..<colon])
            let pass = try Self.percentDecoded(userInfo[userInfo.index(after: colon)...])
            guard !pass.isEmpty else {
                throw RedisError.invalidURL("the password is empty")
            }
            username = user.isEmpty ? nil : user
            password = pass
        } else {
            hostAndPort = authority
        }

        let host: Substring
        let portText: Substring?
        if hostAndPort.hasPrefix("[") {
            guard let close = hostAndPort.firstIndex(of: "]") else {
                throw RedisError.invalidURL("unterminated IPv6 address")
            }
            host = hostAndPort[hostAndPort.index(after: hostAndPort.startIndex)..<close]
            let afterBracket = hostAndPort[hostAndPort.index(after: close)...]
            if afterBracket.isEmpty {
                portText = nil
            } else if afterBracket.hasPrefix(":") {
                portText = afterBracket.dropFirst()
            } else {
                throw RedisError.invalidURL("unexpected characters after the IPv6 address")
            }
        } else if let colon = hostAndPort.firstIndex(of: ":") {
            host = hostAndPort[..<colon]
            portText = hostAndPort[hostAndPort.index(after: colon)...]
        } else {
            host = hostAndPort
            portText = nil
        }
        guard !host.isEmpty else {
            throw RedisError.invalidURL("the host is missing")
        }

        var port = 6379
        if let portText {
            guard portText.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(portText), (1...65535).contains(value)
            else {
                throw RedisError.invalidURL("the port must be a number from 1 to 65535")
            }
            port = value
        }

        var database = 0
        if let path, !path.isEmpty {
            guard path.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(path) else {
                throw RedisError.invalidURL("the database must be a non-negative integer")
            }
            database = value
        }

        self.init(host: String(host), port: port, username: username, password: password, database: database, tls: secure ? TLS() : nil)
    }

    private static func percentDecoded(_ text: Substring) throws -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(Self.hexValue), let low = iterator.next().flatMap(Self.hexValue) else {
                throw RedisError.invalidURL("bad percent-encoding in the user info")
            }
            bytes.append(high << 4 | low)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
