import Logging

/// Exponential backoff with full jitter for `CurlHTTPClient.execute(_:retrying:)`.
public struct RetryPolicy: Sendable {
    /// Attempts in total, the first included (values below 1 count as 1).
    public var maxAttempts: Int
    /// Upper bound of the delay before attempt 2.
    public var initialDelay: Duration
    /// Upper bound of any delay, a server's `Retry-After` included.
    public var maxDelay: Duration
    /// Growth of the upper bound per attempt.
    public var multiplier: Double

    public init(
        maxAttempts: Int = 5,
        initialDelay: Duration = .milliseconds(200),
        maxDelay: Duration = .seconds(5),
        multiplier: Double = 2
    ) {
        self.maxAttempts = maxAttempts
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.multiplier = multiplier
    }

    /// The upper bound of the delay before `attempt` (2...maxAttempts):
    /// `min(maxDelay, initialDelay * multiplier^(attempt - 2))`; zero for attempt 1 and below.
    public func delayCap(beforeAttempt attempt: Int) -> Duration {
        guard attempt >= 2 else { return .zero }
        let maximum = max(maxDelay.seconds, 0)
        let cap = initialDelay.seconds * Foundationless.pow(multiplier, attempt - 2)
        guard cap.isFinite, cap < maximum else { return cap.isNaN ? .zero : .seconds(maximum) }
        return .seconds(max(cap, 0))
    }

    /// Full jitter: a uniformly random duration in `0...delayCap(beforeAttempt: attempt)`.
    public func delay(beforeAttempt attempt: Int) -> Duration {
        let cap = delayCap(beforeAttempt: attempt).seconds
        guard cap > 0 else { return .zero }
        return .seconds(Double.random(in: 0...cap))
    }
}

extension CurlHTTPClient {
    /// Retries on connect errors, timeouts, HTTP 429 and 5xx (honouring a Retry-After seconds header on
    /// 429/503, capped by maxDelay); returns the last response or throws the last error when attempts run out.
    /// Other errors, `CancellationError` included, are thrown at once.
    public func execute(_ request: CurlRequest, retrying policy: RetryPolicy) async throws -> CurlResponse {
        try await Self.withRetries(policy: policy, logger: logger) {
            try await self.execute(request)
        }
    }

    /// The retry loop, with the sleep and the operation injectable for tests.
    static func withRetries(
        policy: RetryPolicy,
        logger: Logger,
        sleep: (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
        operation: () async throws -> CurlResponse
    ) async throws -> CurlResponse {
        let attempts = max(policy.maxAttempts, 1)
        var attempt = 1
        while true {
            let delay: Duration
            do {
                let response = try await operation()
                guard Self.isRetryable(status: response.status), attempt < attempts else { return response }
                delay = Self.retryAfter(response, policy: policy) ?? policy.delay(beforeAttempt: attempt + 1)
                logger.debug(
                    "retrying HTTP request",
                    metadata: ["status": "\(response.status)", "attempt": "\(attempt + 1)", "delay": "\(delay)"]
                )
            } catch let error as CurlError where error.isConnectError || error.isTimeout {
                guard attempt < attempts else { throw error }
                delay = policy.delay(beforeAttempt: attempt + 1)
                logger.debug(
                    "retrying HTTP request",
                    metadata: ["error": "\(error)", "attempt": "\(attempt + 1)", "delay": "\(delay)"]
                )
            }
            if delay > .zero {
                try await sleep(delay)
            } else {
                try Task.checkCancellation()
            }
            attempt += 1
        }
    }

    static func isRetryable(status: Int) -> Bool {
        status == 429 || (500...599).contains(status)
    }

    /// A `Retry-After: <seconds>` on 429/503, capped by `maxDelay`; nil otherwise (HTTP-date values are ignored).
    static func retryAfter(_ response: CurlResponse, policy: RetryPolicy) -> Duration? {
        guard response.status == 429 || response.status == 503,
            let value = response.header("Retry-After"),
            let seconds = Int(value.trimmingASCIISpaces()), seconds >= 0
        else { return nil }
        return min(.seconds(seconds), max(policy.maxDelay, .zero))
    }
}

extension Duration {
    fileprivate var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

extension String {
    fileprivate func trimmingASCIISpaces() -> Substring {
        var slice = self[...]
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return slice
    }
}

/// Integer powers without Foundation.
private enum Foundationless {
    static func pow(_ base: Double, _ exponent: Int) -> Double {
        var result = 1.0
        var factor = base
        var remaining = exponent
        while remaining > 0 {
            if remaining & 1 == 1 { result *= factor }
            factor *= factor
            remaining >>= 1
        }
        return result
    }
}
