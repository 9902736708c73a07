import CCurl
import NIOConcurrencyHelpers

/// One request in flight: an easy handle (with its C-side buffers) and the continuation waiting for it.
///
/// `@unchecked Sendable`: the C transfer is configured on the creating thread *before* the object is
/// handed to the loop (the handoff goes through the loop's lock, which orders the accesses), and from
/// then on only the loop thread touches it, until it is removed from the multi handle. `deinit` frees
/// it when the last reference goes, which is after removal. The only state shared between threads,
/// the continuation, lives in a `NIOLockedValueBox`.
final class Transfer: @unchecked Sendable {
    private enum State {
        case idle
        case waiting(CheckedContinuation<CurlResponse, any Error>)
        case cancelled
        case finished
    }

    private let handle: OpaquePointer
    /// The easy handle; the loop's key for this transfer.
    let easy: UnsafeMutableRawPointer
    let method: String
    let url: String
    private let state = NIOLockedValueBox(State.idle)
    /// Set for a streamed response: body pieces go there as they arrive instead of into the C buffer.
    private let sink: ResponseStreamSink?

    init(request: CurlRequest, trusting caFile: String? = nil, streamingTo sink: ResponseStreamSink? = nil) throws {
        guard let handle = ccurl_transfer_create(), let easy = ccurl_transfer_easy(handle) else {
            throw CurlError(CURLE_FAILED_INIT, message: "curl_easy_init failed")
        }
        self.handle = handle
        self.easy = easy
        self.method = request.method
        self.url = request.url
        self.sink = sink
        // All stored properties are set: if configuring throws, `deinit` runs and frees the handle.
        try configure(request, trusting: caFile)
        if sink != nil {
            // Unretained: the easy handle, and with it the callback, never outlives this object.
            ccurl_transfer_set_body_sink(
                handle,
                { context, bytes, length in
                    let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
                    return transfer.receive(UnsafeRawBufferPointer(start: bytes, count: length)) ? 1 : 0
                },
                Unmanaged.passUnretained(self).toOpaque()
            )
        }
    }

    deinit {
        ccurl_transfer_destroy(handle)
    }

    private func configure(_ request: CurlRequest, trusting caFile: String?) throws {
        func check(_ code: CURLcode, _ what: String) throws {
            guard code == CURLE_OK else { throw CurlError(code, message: "\(what): \(String(cString: curl_easy_strerror(code)))") }
        }
        func invalid(_ message: String) -> CurlError {
            CurlError(CURLE_BAD_FUNCTION_ARGUMENT, message: message)
        }

        let method = request.method.uppercased()
        guard !method.isEmpty, method.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw invalid("invalid HTTP method \(request.method.debugDescription)")
        }
        guard !request.url.utf8.contains(0) else { throw invalid("URL contains a NUL byte") }

        try check(ccurl_easy_setopt_string(easy, CURLOPT_URL, request.url), "URL")
        try check(ccurl_easy_setopt_string(easy, CURLOPT_PROTOCOLS_STR, "http,https"), "protocols")
        if let caFile { try check(ccurl_easy_setopt_string(easy, CURLOPT_CAINFO, caFile), "CA file") }
        try check(ccurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, request.timeout.curlMilliseconds), "timeout")
        try check(
            ccurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, request.connectTimeout.curlMilliseconds),
            "connect timeout"
        )
        if request.maxResponseBodySize > 0 {
            ccurl_transfer_set_max_body(handle, request.maxResponseBodySize)
        }

        switch method {
        case "GET" where request.body.isEmpty:
            try check(ccurl_easy_setopt_long(easy, CURLOPT_HTTPGET, 1), "GET")
        case "HEAD" where request.body.isEmpty:
            try check(ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 1), "HEAD")
        default:
            // POSTFIELDS makes curl send the body with a Content-Length; CUSTOMREQUEST swaps the method name.
            try check(ccurl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count)), "body size")
            if request.body.isEmpty {
                try check(ccurl_easy_setopt_long(easy, CURLOPT_POST, 1), "POST")
            } else {
                // COPYPOSTFIELDS copies the bytes: the handle does not depend on Swift memory.
                let code = request.body.withUnsafeBytes { bytes in
                    ccurl_easy_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress))
                }
                try check(code, "body")
            }
            if method != "POST" {
                try check(ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, method), "method")
            }
        }

        var sendsExpect = false
        for (name, value) in request.headers {
            guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) else {
                throw invalid("invalid header name \(name.debugDescription)")
            }
            guard !value.utf8.contains(where: { $0 == 0 || $0 == 0x0A || $0 == 0x0D }) else {
                throw invalid("invalid value for header \(name)")
            }
            if name.lowercased() == "expect" { sendsExpect = true }
            // curl removes a header given as "Name:"; "Name;" sends it with an empty value.
            let line = value.isEmpty ? "\(name);" : "\(name): \(value)"
            guard ccurl_transfer_append_header(handle, line) == 0 else { throw CurlError(CURLE_OUT_OF_MEMORY) }
        }
        if !sendsExpect {
            // Without this curl sends "Expect: 100-continue" for larger bodies and waits up to 1 s for the interim answer.
            guard ccurl_transfer_append_header(handle, "Expect:") == 0 else { throw CurlError(CURLE_OUT_OF_MEMORY) }
        }
        try check(ccurl_transfer_apply_headers(handle), "headers")
    }

    // MARK: - Continuation handoff (any thread)

    /// Parks the continuation. Returns false when the task was cancelled before; the caller then resumes it.
    func begin(_ continuation: CheckedContinuation<CurlResponse, any Error>) -> Bool {
        state.withLockedValue { state in
            guard case .idle = state else { return false }
            state = .waiting(continuation)
            return true
        }
    }

    /// Resumes the waiting continuation (once); later calls do nothing.
    func finish(_ result: Result<CurlResponse, any Error>) {
        let continuation: CheckedContinuation<CurlResponse, any Error>? = state.withLockedValue { state in
            switch state {
            case .waiting(let continuation):
                state = .finished
                return continuation
            case .idle:
                state = .finished
                return nil
            case .cancelled, .finished:
                return nil
            }
        }
        continuation?.resume(with: result)
    }

    /// Task cancellation: fails the waiting caller at once with `CancellationError`.
    func cancel() {
        let continuation: CheckedContinuation<CurlResponse, any Error>? = state.withLockedValue { state in
            switch state {
            case .idle:
                state = .cancelled
                return nil
            case .waiting(let continuation):
                state = .finished
                return continuation
            case .cancelled, .finished:
                return nil
            }
        }
        continuation?.resume(throwing: CancellationError())
    }

    /// True once the caller no longer waits (finished or cancelled): the loop skips or drops such transfers.
    var isDone: Bool {
        state.withLockedValue { state in
            switch state {
            case .idle, .waiting: false
            case .cancelled, .finished: true
            }
        }
    }

    // MARK: - Streamed body (loop thread, while the transfer runs)

    /// One piece of a streamed body. The first piece also settles the response head (status, headers).
    private func receive(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let sink else { return false }
        return sink.receive(bytes) { responseHead() }
    }

    private func responseHead() -> CurlResponseHead {
        var status = 0
        _ = ccurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        var length = 0
        var headers: [(name: String, value: String)] = []
        if let raw = ccurl_transfer_headers(handle, &length), length > 0 {
            headers = Self.parseHeaders(UnsafeRawBufferPointer(start: raw, count: length))
        }
        return CurlResponseHead(status: status, headers: headers)
    }

    // MARK: - Results (loop thread, after removal from the multi handle)

    func result(for code: CURLcode) -> Result<CurlResponse, any Error> {
        guard code == CURLE_OK else {
            var message = String(cString: ccurl_transfer_error(handle))
            if ccurl_transfer_body_overflowed(handle) != 0 {
                message = "response body exceeds the size limit"
            }
            return .failure(CurlError(code, message: message))
        }
        let head = responseHead()
        var length = 0
        let body: [UInt8]
        if let bytes = ccurl_transfer_body(handle, &length), length > 0 {
            body = Array(UnsafeBufferPointer(start: bytes, count: length))
        } else {
            body = []
        }
        return .success(CurlResponse(status: head.status, headers: head.headers, body: body))
    }

    /// Splits a raw header block ("HTTP/1.1 200 OK\r\nName: value\r\n...\r\n") into name/value pairs.
    static func parseHeaders(_ raw: UnsafeRawBufferPointer) -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = []
        for line in raw.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            var line = line[...]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }  // status line, blank line
            if line.starts(with: "HTTP/".utf8) { continue }
            let name = String(decoding: line[..<colon], as: UTF8.self)
            let value = String(decoding: line[line.index(after: colon)...], as: UTF8.self)
            headers.append((name: name, value: value.trimmingSpaces()))
        }
        return headers
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        let bytes = utf8
        guard let first = bytes.firstIndex(where: { $0 != 0x20 && $0 != 0x09 }),
            let last = bytes.lastIndex(where: { $0 != 0x20 && $0 != 0x09 })
        else { return "" }
        return String(self[first...last])
    }
}
