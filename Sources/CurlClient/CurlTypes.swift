import CCurl

/// One outbound HTTP request.
public struct CurlRequest: Sendable {
    public var method: String
    public var url: String
    /// Sent in order. A header with an empty value is sent empty (not removed, as curl's own `Name:` syntax would).
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// Limit for the whole transfer. `.zero` (or less) means no limit.
    public var timeout: Duration
    /// Limit for the connect phase (DNS, TCP, TLS). `.zero` (or less) means curl's default (300 s).
    public var connectTimeout: Duration
    /// A larger response body fails the transfer (CURLE_WRITE_ERROR). `0` means no cap.
    public var maxResponseBodySize: Int = 16 << 20

    public init(
        method: String = "POST",
        url: String,
        headers: [(name: String, value: String)] = [],
        body: [UInt8] = [],
        timeout: Duration = .seconds(30),
        connectTimeout: Duration = .seconds(5)
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.connectTimeout = connectTimeout
    }
}

/// A completed HTTP exchange; any status (including 4xx/5xx) is a response.
public struct CurlResponse: Sendable {
    public let status: Int
    /// The headers of the final response, in order, names as received.
    public let headers: [(name: String, value: String)]
    public let body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first(named: name)
    }
}

extension [(name: String, value: String)] {
    /// The value of the first header with this name (case-insensitive).
    func first(named name: String) -> String? {
        let wanted = name.lowercased()
        return first { $0.name.lowercased() == wanted }?.value
    }
}

/// A transfer that did not produce an HTTP response.
public struct CurlError: Error, Sendable, CustomStringConvertible {
    /// The `CURLcode`, or `CurlError.clientShutdownCode` when the client was shut down.
    public let code: Int32
    /// curl's error buffer text (or `curl_easy_strerror` when the buffer was empty).
    public let message: String

    /// Not a curl code: the transfer was refused or aborted because `CurlHTTPClient.shutdown()` was called.
    public static let clientShutdownCode: Int32 = -1

    public init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }

    init(_ code: CURLcode, message: String = "") {
        self.code = Int32(bitPattern: code.rawValue)
        self.message = message.isEmpty ? String(cString: curl_easy_strerror(code)) : message
    }

    static let shutdown = CurlError(code: clientShutdownCode, message: "the HTTP client is shut down")

    /// Could not resolve the host or proxy, or could not connect (refused, unreachable). The request was not sent.
    public var isConnectError: Bool {
        code == Self.raw(CURLE_COULDNT_CONNECT)
            || code == Self.raw(CURLE_COULDNT_RESOLVE_HOST)
            || code == Self.raw(CURLE_COULDNT_RESOLVE_PROXY)
    }

    /// The transfer or its connect phase exceeded its timeout.
    public var isTimeout: Bool {
        code == Self.raw(CURLE_OPERATION_TIMEDOUT)
    }

    /// The client was shut down before the transfer completed.
    public var isShutdown: Bool {
        code == Self.clientShutdownCode
    }

    public var description: String {
        "CurlError(\(code)): \(message)"
    }

    private static func raw(_ code: CURLcode) -> Int32 {
        Int32(bitPattern: code.rawValue)
    }
}

extension Duration {
    /// Milliseconds for a curl `*_MS` option: positive durations round up to at least 1 ms, others give 0.
    var curlMilliseconds: Int {
        let (seconds, attoseconds) = components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return 0 }
        let clampedSeconds = min(seconds, 1_000_000_000)
        let millisecondsPart = (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int(clampedSeconds) * 1000 + Int(millisecondsPart)
    }
}
