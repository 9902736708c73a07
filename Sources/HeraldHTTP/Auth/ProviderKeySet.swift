import CurlClient
import Foundation
import HeraldCore
import JWTKit
import Logging
import Metrics
import ServiceLifecycle

/// The identity provider's signing keys: fetched with the libcurl client (its own thread, never an event loop),
/// cached, and refreshed when the provider's `Cache-Control: max-age` runs out (bounded to 5 min … 24 h) and
/// when a token names a `kid` the cache does not hold (a provider rotating its keys). Those unknown-`kid`
/// refreshes are rate-limited, so a flood of made-up `kid`s cannot make Herald hammer the provider.
/// A failed refresh keeps the last good keys; it is logged, counted and shown by `/readyz`.
/// As a `Service`, it runs the scheduled refreshes until shutdown.
public actor ProviderKeySet: Service {
    public let settings: IdentityProviderSettings
    private let http: CurlHTTPClient
    private let logger: Logger
    /// Created up front so `/metrics` shows 0 before the first failure.
    private let refreshFailures = Counter(label: "herald_jwks_refresh_failures_total")

    /// Resolved from the discovery document on the first successful fetch (or given directly).
    private var jwksURL: String?
    private var current = ProviderKeys.empty
    private var fetchedAt: ContinuousClock.Instant?
    private var refreshDue = ContinuousClock.now
    private var lastError: String?
    /// The refresh in flight; everyone who needs one meanwhile waits for it instead of starting another.
    private var refreshing: Task<Void, Never>?
    private var unknownKeyRefreshes: RefreshBudget
    private let timing: RefreshTiming

    public init(settings: IdentityProviderSettings, http: CurlHTTPClient, logger: Logger) {
        self.init(settings: settings, http: http, logger: logger, timing: .standard)
    }

    /// With other timing: tests shorten the intervals to see scheduled refreshes happen.
    init(settings: IdentityProviderSettings, http: CurlHTTPClient, logger: Logger, timing: RefreshTiming) {
        self.settings = settings
        self.http = http
        self.logger = logger
        self.timing = timing
        self.unknownKeyRefreshes = RefreshBudget(limit: timing.unknownKeyRefreshesPerWindow, window: timing.unknownKeyWindow)
    }

    /// Start-up: retries until a key set is loaded or `settings.startupTimeoutSeconds` pass, then throws a
    /// one-line error that names the URL that failed.
    public func loadInitialKeys() async throws(ProviderKeysUnavailable) {
        let timeout = Duration.milliseconds(Int64(settings.startupTimeoutSeconds * 1000))
        let deadline = ContinuousClock.now + timeout
        var pause = Duration.milliseconds(200)
        while true {
            // Never zero: the HTTP client reads a zero timeout as none.
            let remaining = max(deadline - .now, .milliseconds(100))
            do {
                try await fetch(timeout: min(remaining, timing.requestTimeout))
                return
            } catch {
                guard ContinuousClock.now + pause < deadline else {
                    throw ProviderKeysUnavailable(failure: error, timeoutSeconds: settings.startupTimeoutSeconds)
                }
                logger.warning("identity provider keys not loaded yet; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }

    /// The keys that verify a token with this `kid` and `alg`. An unknown `kid` triggers a refresh first,
    /// unless the rate limit has been reached.
    func keys(keyID: String?, algorithm: String) async throws(TokenRejection) -> JWTKeyCollection {
        switch current.lookup(keyID: keyID, algorithm: algorithm) {
        case .found(let collection): return collection
        case .algorithmDoesNotMatchKey: throw .algorithmDoesNotMatchKey
        case .unknownKey:
            guard keyID != nil, refreshing != nil || unknownKeyRefreshes.spend(at: .now) else { throw .unknownKey }
            await refresh()
            guard case .found(let collection) = current.lookup(keyID: keyID, algorithm: algorithm) else { throw .unknownKey }
            return collection
        }
    }

    /// What `/readyz` shows.
    public struct State: Sendable, Encodable {
        public let url: String
        public let keys: Int
        public let ageSeconds: Int?
        public let lastRefreshError: String?

        enum CodingKeys: String, CodingKey {
            case url, keys
            case ageSeconds = "age_seconds"
            case lastRefreshError = "last_refresh_error"
        }
    }

    public var state: State {
        State(
            url: jwksURL ?? settings.keySource.url, keys: current.keyIDs.count,
            ageSeconds: fetchedAt.map { Int((ContinuousClock.now - $0).components.seconds) }, lastRefreshError: lastError
        )
    }

    /// Scheduled refreshes, until graceful shutdown.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let due = await self.refreshDue
                try? await Task.sleep(until: due, clock: .continuous)
                await self.refreshIfDue()
            }
        }
    }

    /// An unknown-`kid` refresh may have moved the schedule while the loop slept.
    private func refreshIfDue() async {
        guard ContinuousClock.now >= refreshDue, !Task.isCancelled else { return }
        await refresh()
    }

    private func refresh() async {
        if let refreshing {
            await refreshing.value
            return
        }
        let task = Task { await self.refreshOnce() }
        refreshing = task
        await task.value
        refreshing = nil
    }

    private func refreshOnce() async {
        do {
            try await fetch(timeout: timing.requestTimeout)
        } catch {
            lastError = error.description
            refreshDue = .now + timing.retryAfterFailure
            refreshFailures.increment()
            logger.warning("identity provider keys not refreshed; keeping the last good ones", metadata: ["error": "\(error)"])
        }
    }

    /// One fetch of the discovery document (until it has given the JWKS URL) and the key set.
    private func fetch(timeout: Duration) async throws(URLFetchError) {
        let url: String
        switch (jwksURL, settings.keySource) {
        case (let known?, _):
            url = known
        case (nil, .discovery(let issuer)):
            url = try await discoverKeySetURL(issuer: issuer, timeout: timeout)
            jwksURL = url
        case (nil, .jwks(let direct)):
            url = direct
        }
        let response = try await get(url, timeout: timeout)
        let parsed: ProviderKeys
        do {
            parsed = try await ProviderKeys.parse(response.body)
        } catch {
            throw URLFetchError(url: url, reason: error.description)
        }
        current = parsed
        fetchedAt = .now
        lastError = nil
        refreshDue = .now + timing.interval(cacheControl: response.header("Cache-Control"))
        logger.info(
            "identity provider keys loaded",
            metadata: ["url": "\(url)", "kids": "\(parsed.keyIDs.sorted().joined(separator: ","))", "skipped": "\(parsed.skipped)"]
        )
    }

    /// OpenID Connect Discovery 1.0 §4: the document's `issuer` must be the configured issuer exactly.
    private func discoverKeySetURL(issuer: String, timeout: Duration) async throws(URLFetchError) -> String {
        let url = settings.keySource.url
        struct Discovery: Decodable {
            let issuer: String
            let jwks_uri: String
        }
        let response = try await get(url, timeout: timeout)
        guard let document = try? JSONDecoder().decode(Discovery.self, from: Data(response.body)) else {
            throw URLFetchError(url: url, reason: "the response is not an OpenID configuration with issuer and jwks_uri")
        }
        guard document.issuer == issuer else {
            throw URLFetchError(url: url, reason: "the document names the issuer \"\(document.issuer)\", not the configured one")
        }
        guard document.jwks_uri.hasPrefix("https://") || document.jwks_uri.hasPrefix("http://") else {
            throw URLFetchError(url: url, reason: "jwks_uri is not an http(s) URL")
        }
        return document.jwks_uri
    }

    private func get(_ url: String, timeout: Duration) async throws(URLFetchError) -> CurlResponse {
        var request = CurlRequest(method: "GET", url: url, headers: [("Accept", "application/json")], timeout: timeout, connectTimeout: timeout)
        request.maxResponseBodySize = 1 << 20
        let response: CurlResponse
        do {
            response = try await http.execute(request)
        } catch let error as CurlError {
            throw URLFetchError(url: url, reason: error.message)
        } catch {
            throw URLFetchError(url: url, reason: "\(error)")
        }
        guard response.status == 200 else { throw URLFetchError(url: url, reason: "HTTP status \(response.status)") }
        return response
    }
}

extension IdentityProviderSettings.KeySource {
    /// The first URL fetched: the discovery document or the key set.
    var url: String {
        switch self {
        case .discovery(let issuer): (issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer) + "/.well-known/openid-configuration"
        case .jwks(let url): url
        }
    }
}

/// How often keys are fetched.
struct RefreshTiming: Sendable {
    var minimumInterval = Duration.seconds(300)
    var maximumInterval = Duration.seconds(86400)
    /// When the provider sends no `max-age`.
    var defaultInterval = Duration.seconds(3600)
    var retryAfterFailure = Duration.seconds(30)
    var requestTimeout = Duration.seconds(5)
    var unknownKeyRefreshesPerWindow = 3
    var unknownKeyWindow = Duration.seconds(60)

    static let standard = RefreshTiming()

    /// The provider's `max-age`, bounded; `no-cache`/`no-store` or a zero age mean the minimum.
    func interval(cacheControl: String?) -> Duration {
        guard let cacheControl else { return defaultInterval }
        var seconds: Int?
        for directive in cacheControl.lowercased().split(separator: ",") {
            let parts = directive.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            switch parts.first {
            case "no-cache", "no-store": return minimumInterval
            case "max-age" where parts.count == 2: seconds = Int(parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")))
            default: continue
            }
        }
        guard let seconds else { return defaultInterval }
        return min(max(.seconds(seconds), minimumInterval), maximumInterval)
    }
}

/// At most `limit` spends in any `window` (a sliding window over the last `limit` spends).
struct RefreshBudget {
    let limit: Int
    let window: Duration
    private var spends: [ContinuousClock.Instant] = []

    init(limit: Int, window: Duration) {
        self.limit = limit
        self.window = window
    }

    /// Spends one if the window allows; false when `limit` were spent within the last `window`.
    mutating func spend(at now: ContinuousClock.Instant) -> Bool {
        spends.removeAll { now - $0 >= window }
        guard spends.count < limit else { return false }
        spends.append(now)
        return true
    }
}

/// A fetch that failed, with the URL; `description` is one line.
struct URLFetchError: Error, CustomStringConvertible {
    let url: String
    let reason: String
    var description: String { "\(url): \(reason.split(whereSeparator: \.isNewline).joined(separator: " "))" }
}

/// Start-up could not load the provider's keys; `description` is the one line `herald serve` prints.
public struct ProviderKeysUnavailable: Error, CustomStringConvertible {
    let failure: URLFetchError
    let timeoutSeconds: Double

    public var description: String {
        let seconds = timeoutSeconds == timeoutSeconds.rounded() ? String(Int(timeoutSeconds)) : String(timeoutSeconds)
        return "cannot load the identity provider's signing keys within \(seconds) s from \(failure)"
    }
}
