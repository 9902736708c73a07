import RedisClient

/// Everything `herald serve` needs, read from the environment (flags may override single values).
/// Validation happens once, at start-up: a bad value stops the process with one line saying which and why.
public struct HeraldConfiguration: Sendable {
    public enum AgentKind: String, Sendable, CaseIterable {
        case langgraph
        case generic
    }

    /// `REDIS_URL`: one server (`redis://`, `rediss://`) or a cluster (`redis+cluster://host:port,host:port`, or the
    /// seeds in `REDIS_CLUSTER_NODES`).
    public var redisURL: String
    /// With `rediss://`: a private CA (`REDIS_TLS_CA_FILE`), a client certificate and key
    /// (`REDIS_TLS_CERT_FILE`, `REDIS_TLS_KEY_FILE`), no verification at all (`REDIS_TLS_INSECURE`).
    public var redisTLS = RedisConfiguration.TLS()
    /// CAs to trust for the engine and JWKS calls instead of the system's store (`HERALD_OUTBOUND_CA_FILE`).
    public var outboundCAFile: String?
    /// PEM files of the listener's certificate chain and key (`HERALD_TLS_CERT_FILE`, `HERALD_TLS_KEY_FILE`): with
    /// them the client listener speaks HTTPS only. Read again on SIGHUP.
    public var serverTLS: ServerTLSFiles?
    public var databaseURL: String
    public var agentURL: String
    public var agentKind: AgentKind
    public var agentAssistantID: String
    /// The engine's API key, sent with every request to the engine (never logged).
    public var agentAPIKey: String?
    /// The header that carries `agentAPIKey` as it is; nil: `x-api-key` for LangGraph, `Authorization: Bearer` otherwise.
    public var agentAuthHeader: String?
    /// Join the engine's stream of each run for live tokens (LangGraph); off: the webhook alone brings the reply.
    public var agentStream: Bool
    /// Engine streams joined at once by one node; runs beyond it get their final message only.
    public var agentStreamMaxJoins: Int
    /// Base of the callback URL handed to the engine, e.g. `https://herald.example.com`.
    public var publicURL: String
    public var host: String
    public var port: Int
    public var heartbeatSeconds: Double
    /// On SIGTERM, open streams are told to reconnect at random moments over this window (`HERALD_DRAIN_SECONDS`).
    public var drainSeconds: Double
    public var runTimeoutSeconds: Double
    public var logMaxLength: Int
    public var logTTLSeconds: Int
    /// Prefix of the Redis channel and log keys; `sse:thread:` gives `sse:thread:{id}` and `sse:thread:{id}:log`.
    public var channelPrefix: String
    public var databasePoolSize: Int
    /// Upper bound of a request body, in bytes.
    public var maxBodyBytes: Int
    /// Longest accepted message content, in UTF-8 bytes.
    public var maxContentBytes: Int
    /// A stream whose unsent backlog passes either bound is disconnected (it resumes with Last-Event-ID).
    public var streamQueueMaxFrames: Int
    public var streamQueueMaxBytes: Int
    /// Attempts to deliver a run to the engine before the run is marked failed.
    public var agentMaxAttempts: Int
    /// HS256 secret of user tokens. Nil in development mode (which then uses a published secret) or when
    /// an identity provider signs every user token.
    public var jwtSecret: String?
    /// Verification of tokens from an identity provider (JWKS); nil when only HS256 tokens are accepted.
    public var identityProvider: IdentityProviderSettings?
    /// Clock skew tolerated when checking a token's `exp`, `nbf` and `iat`.
    public var jwtLeewaySeconds: Int
    /// Explicitly insecure local development: no JWT secret needed (tokens are signed with a known one).
    public var developmentMode: Bool
    /// Standard Webhooks secrets (`whsec_…`); several while rotating. Empty: only callback tokens are accepted.
    public var webhookSecrets: [String]
    /// Exact browser origins allowed by CORS (with credentials).
    public var corsOrigins: [String]
    /// Streams a user may hold open on one node; a WebSocket counts once, whatever it watches.
    public var maxStreamsPerUser: Int
    /// Threads one WebSocket may watch at once.
    public var webSocketMaxThreads: Int
    public var sendsPerMinute: Int
    /// Deepest JSON nesting accepted in a request body.
    public var maxJSONDepth: Int
    /// How long a completed reply stays in the response cache for sends with `use_cache`; 0: the cache is off.
    public var responseCacheTTLSeconds: Int
    /// Timeouts of client connections and their cap.
    public var connectionLimits: ConnectionLimits

    public init(
        redisURL: String = "redis://127.0.0.1:6379",
        databaseURL: String = "postgresql://postgres@127.0.0.1:5432/herald",
        agentURL: String = "http://127.0.0.1:8090",
        agentKind: AgentKind = .langgraph,
        agentAssistantID: String = "agent",
        agentAPIKey: String? = nil,
        agentAuthHeader: String? = nil,
        agentStream: Bool = true,
        agentStreamMaxJoins: Int = 256,
        publicURL: String = "http://127.0.0.1:8080",
        host: String = "127.0.0.1",
        port: Int = 8080,
        heartbeatSeconds: Double = 15,
        drainSeconds: Double = 10,
        runTimeoutSeconds: Double = 300,
        logMaxLength: Int = 1000,
        logTTLSeconds: Int = 3600,
        channelPrefix: String = "sse:thread:",
        databasePoolSize: Int = 8,
        maxBodyBytes: Int = 1 << 20,
        maxContentBytes: Int = 64 * 1024,
        streamQueueMaxFrames: Int = 1024,
        streamQueueMaxBytes: Int = 4 << 20,
        agentMaxAttempts: Int = 5,
        jwtSecret: String? = nil,
        identityProvider: IdentityProviderSettings? = nil,
        jwtLeewaySeconds: Int = 60,
        developmentMode: Bool = false,
        webhookSecrets: [String] = [],
        corsOrigins: [String] = [],
        maxStreamsPerUser: Int = 20,
        webSocketMaxThreads: Int = 100,
        sendsPerMinute: Int = 30,
        maxJSONDepth: Int = 32,
        responseCacheTTLSeconds: Int = 0,
        connectionLimits: ConnectionLimits = .init()
    ) {
        self.redisURL = redisURL
        self.databaseURL = databaseURL
        self.agentURL = agentURL
        self.agentKind = agentKind
        self.agentAssistantID = agentAssistantID
        self.agentAPIKey = agentAPIKey
        self.agentAuthHeader = agentAuthHeader
        self.agentStream = agentStream
        self.agentStreamMaxJoins = agentStreamMaxJoins
        self.publicURL = publicURL
        self.host = host
        self.port = port
        self.heartbeatSeconds = heartbeatSeconds
        self.drainSeconds = drainSeconds
        self.runTimeoutSeconds = runTimeoutSeconds
        self.logMaxLength = logMaxLength
        self.logTTLSeconds = logTTLSeconds
        self.channelPrefix = channelPrefix
        self.databasePoolSize = databasePoolSize
        self.maxBodyBytes = maxBodyBytes
        self.maxContentBytes = maxContentBytes
        self.streamQueueMaxFrames = streamQueueMaxFrames
        self.streamQueueMaxBytes = streamQueueMaxBytes
        self.agentMaxAttempts = agentMaxAttempts
        self.jwtSecret = jwtSecret
        self.identityProvider = identityProvider
        self.jwtLeewaySeconds = jwtLeewaySeconds
        self.developmentMode = developmentMode
        self.webhookSecrets = webhookSecrets
        self.corsOrigins = corsOrigins
        self.maxStreamsPerUser = maxStreamsPerUser
        self.webSocketMaxThreads = webSocketMaxThreads
        self.sendsPerMinute = sendsPerMinute
        self.maxJSONDepth = maxJSONDepth
        self.responseCacheTTLSeconds = responseCacheTTLSeconds
        self.connectionLimits = connectionLimits
    }
}

/// Where the listener's certificate chain and private key are (PEM).
public struct ServerTLSFiles: Sendable, Equatable {
    public var certificateFile: String
    public var keyFile: String

    public init(certificateFile: String, keyFile: String) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }
}

/// A setting that is missing or malformed; `description` is the one line printed at start-up.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let variable: String
    public let reason: String
    public var description: String { "configuration error: \(variable) \(reason)" }
}

extension HeraldConfiguration {
    /// Reads every setting from `environment`, falling back to the defaults above where a variable is unset.
    public static func fromEnvironment(_ environment: [String: String]) throws(ConfigurationError) -> HeraldConfiguration {
        let reader = EnvironmentReader(environment: environment)
        let defaults = HeraldConfiguration()
        var configuration = defaults
        configuration.redisURL = try reader.url(
            "REDIS_URL", schemes: ["redis", "rediss", "redis+cluster", "rediss+cluster"], default: defaults.redisURL
        )
        if let nodes = try reader.optionalString("REDIS_CLUSTER_NODES") {
            guard reader.value("REDIS_URL") == nil else {
                throw ConfigurationError(variable: "REDIS_CLUSTER_NODES", reason: "and REDIS_URL are both set: use one (redis+cluster://… carries credentials)")
            }
            configuration.redisURL = "redis+cluster://" + nodes
        }
        do {
            _ = try RedisDeployment(url: configuration.redisURL)
        } catch {
            throw ConfigurationError(variable: "REDIS_URL", reason: "\(error)")
        }
        configuration.redisTLS = RedisConfiguration.TLS(
            caFile: try reader.optionalString("REDIS_TLS_CA_FILE"), certificateFile: try reader.optionalString("REDIS_TLS_CERT_FILE"),
            keyFile: try reader.optionalString("REDIS_TLS_KEY_FILE"), verifiesServer: !(try reader.flag("REDIS_TLS_INSECURE", default: false))
        )
        configuration.outboundCAFile = try reader.optionalString("HERALD_OUTBOUND_CA_FILE")
        switch (try reader.optionalString("HERALD_TLS_CERT_FILE"), try reader.optionalString("HERALD_TLS_KEY_FILE")) {
        case (let certificate?, let key?): configuration.serverTLS = ServerTLSFiles(certificateFile: certificate, keyFile: key)
        case (nil, nil): break
        case (nil, _?): throw ConfigurationError(variable: "HERALD_TLS_CERT_FILE", reason: "must be set with HERALD_TLS_KEY_FILE")
        case (_?, nil): throw ConfigurationError(variable: "HERALD_TLS_KEY_FILE", reason: "must be set with HERALD_TLS_CERT_FILE")
        }
        let tlsSettingsGiven = configuration.redisTLS != RedisConfiguration.TLS()
        if tlsSettingsGiven, !configuration.redisURL.lowercased().hasPrefix("rediss") {
            throw ConfigurationError(variable: "REDIS_URL", reason: "must start with rediss:// (or rediss+cluster://) when REDIS_TLS_* settings are given")
        }
        if (configuration.redisTLS.certificateFile == nil) != (configuration.redisTLS.keyFile == nil) {
            throw ConfigurationError(variable: "REDIS_TLS_CERT_FILE", reason: "needs REDIS_TLS_KEY_FILE, and the other way round")
        }
        configuration.databaseURL = try reader.url("DATABASE_URL", schemes: ["postgres", "postgresql"], default: defaults.databaseURL)
        configuration.agentURL = try reader.url("AGENT_URL", schemes: ["http", "https"], default: defaults.agentURL)
        configuration.agentKind = try reader.choice("AGENT_KIND", default: defaults.agentKind)
        configuration.agentAssistantID = try reader.string("AGENT_ASSISTANT_ID", default: defaults.agentAssistantID)
        configuration.agentAPIKey = try reader.optionalString("AGENT_API_KEY")
        if let key = configuration.agentAPIKey, key.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
            throw ConfigurationError(variable: "AGENT_API_KEY", reason: "must not contain control characters")
        }
        configuration.agentAuthHeader = try reader.optionalString("AGENT_AUTH_HEADER")
        if let header = configuration.agentAuthHeader, !header.utf8.allSatisfy(Self.isHeaderNameByte) {
            throw ConfigurationError(variable: "AGENT_AUTH_HEADER", reason: "must be an HTTP header name, got \"\(header)\"")
        }
        configuration.agentStream = try reader.flag("HERALD_AGENT_STREAM", default: defaults.agentStream)
        configuration.agentStreamMaxJoins = try reader.integer("HERALD_AGENT_STREAM_MAX_JOINS", default: defaults.agentStreamMaxJoins, range: 1...100_000)
        configuration.publicURL = try reader.url("PUBLIC_URL", schemes: ["http", "https"], default: defaults.publicURL)
        configuration.host = try reader.string("HERALD_HOST", default: defaults.host)
        configuration.port = try reader.integer("HERALD_PORT", default: defaults.port, range: 0...65535)
        configuration.heartbeatSeconds = try reader.seconds("HERALD_HEARTBEAT_SECONDS", default: defaults.heartbeatSeconds)
        configuration.drainSeconds = try reader.seconds("HERALD_DRAIN_SECONDS", default: defaults.drainSeconds)
        configuration.runTimeoutSeconds = try reader.seconds("HERALD_RUN_TIMEOUT_SECONDS", default: defaults.runTimeoutSeconds)
        configuration.logMaxLength = try reader.integer("HERALD_LOG_MAXLEN", default: defaults.logMaxLength, range: 1...10_000_000)
        configuration.logTTLSeconds = try reader.integer("HERALD_LOG_TTL_SECONDS", default: defaults.logTTLSeconds, range: 1...(365 * 86400))
        configuration.channelPrefix = try reader.string("HERALD_CHANNEL_PREFIX", default: defaults.channelPrefix)
        configuration.databasePoolSize = try reader.integer("HERALD_DATABASE_POOL_SIZE", default: defaults.databasePoolSize, range: 1...256)
        configuration.maxBodyBytes = try reader.integer("HERALD_MAX_BODY_BYTES", default: defaults.maxBodyBytes, range: 1024...(64 << 20))
        configuration.maxContentBytes = try reader.integer("HERALD_MAX_CONTENT_BYTES", default: defaults.maxContentBytes, range: 1...(16 << 20))
        configuration.streamQueueMaxFrames = try reader.integer("HERALD_STREAM_QUEUE_FRAMES", default: defaults.streamQueueMaxFrames, range: 1...1_000_000)
        configuration.streamQueueMaxBytes = try reader.integer("HERALD_STREAM_QUEUE_BYTES", default: defaults.streamQueueMaxBytes, range: 1024...(1 << 30))
        configuration.agentMaxAttempts = try reader.integer("HERALD_AGENT_MAX_ATTEMPTS", default: defaults.agentMaxAttempts, range: 1...100)
        configuration.developmentMode = try reader.flag("HERALD_INSECURE_DEV", default: false)
        configuration.jwtSecret = try reader.optionalString("HERALD_JWT_SECRET")
        if let secret = configuration.jwtSecret, secret.utf8.count < 32 {
            throw ConfigurationError(variable: "HERALD_JWT_SECRET", reason: "must be at least 32 bytes, got \(secret.utf8.count)")
        }
        configuration.identityProvider = try IdentityProviderSettings.fromEnvironment(reader)
        configuration.jwtLeewaySeconds = try reader.integer("HERALD_JWT_LEEWAY_SECONDS", default: defaults.jwtLeewaySeconds, range: 0...3600)
        if configuration.jwtSecret == nil, configuration.identityProvider == nil, !configuration.developmentMode {
            throw ConfigurationError(
                variable: "HERALD_JWT_SECRET",
                reason: """
                    is required unless HERALD_JWT_ISSUER or HERALD_JWT_JWKS_URL is set \
                    (set HERALD_INSECURE_DEV=1 or pass --insecure-dev for local development only)
                    """
            )
        }
        if let secrets = try reader.optionalString("HERALD_WEBHOOK_SECRET") {
            do {
                configuration.webhookSecrets = try StandardWebhooks.parseSecrets(secrets)
            } catch {
                throw ConfigurationError(variable: "HERALD_WEBHOOK_SECRET", reason: "must be one or more whsec_<base64> secrets")
            }
        }
        if let origins = try reader.optionalString("HERALD_CORS_ORIGINS") {
            configuration.corsOrigins = origins.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init)
            if let bad = configuration.corsOrigins.first(where: { $0 == "*" || !($0.hasPrefix("http://") || $0.hasPrefix("https://")) }) {
                throw ConfigurationError(variable: "HERALD_CORS_ORIGINS", reason: "must list exact origins like https://app.example.com, got \"\(bad)\"")
            }
        }
        configuration.maxStreamsPerUser = try reader.integer("HERALD_MAX_STREAMS_PER_USER", default: defaults.maxStreamsPerUser, range: 1...100_000)
        configuration.webSocketMaxThreads = try reader.integer("HERALD_WS_MAX_THREADS", default: defaults.webSocketMaxThreads, range: 1...10_000)
        configuration.sendsPerMinute = try reader.integer("HERALD_SENDS_PER_MINUTE", default: defaults.sendsPerMinute, range: 1...1_000_000)
        configuration.maxJSONDepth = try reader.integer("HERALD_MAX_JSON_DEPTH", default: defaults.maxJSONDepth, range: 2...512)
        configuration.responseCacheTTLSeconds = try reader.integer(
            "HERALD_CACHE_TTL_SECONDS", default: defaults.responseCacheTTLSeconds, range: 0...(365 * 86400)
        )
        configuration.connectionLimits = try ConnectionLimits.fromEnvironment(
            reader,
            defaultMaxConnections: ConnectionLimits.defaultMaxConnections(
                fileDescriptorLimit: ConnectionLimits.currentFileDescriptorLimit(),
                databasePoolSize: configuration.databasePoolSize, agentStreamMaxJoins: configuration.agentStreamMaxJoins
            )
        )
        return configuration
    }
}

extension HeraldConfiguration {
    /// The header and value that carry `agentAPIKey` to this kind of engine; nil without a key.
    public var agentCredential: AgentCredential? {
        guard let key = agentAPIKey else { return nil }
        if let agentAuthHeader { return AgentCredential(header: agentAuthHeader, value: key) }
        return switch agentKind {
        case .langgraph: AgentCredential(header: LangGraphAdapter.apiKeyHeader, value: key)
        case .generic: AgentCredential(header: "Authorization", value: "Bearer \(key)")
        }
    }

    /// RFC 9110 `token` characters.
    static func isHeaderNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// Just `DATABASE_URL`, for commands that need nothing else (`herald migrate`).
    public static func databaseURL(fromEnvironment environment: [String: String]) throws(ConfigurationError) -> String {
        try EnvironmentReader(environment: environment).url(
            "DATABASE_URL", schemes: ["postgres", "postgresql"], default: HeraldConfiguration().databaseURL
        )
    }
}

struct EnvironmentReader {
    let environment: [String: String]

    func value(_ name: String) -> String? {
        guard let raw = environment[name] else { return nil }
        let trimmed = raw.trimmingWhitespace()
        return trimmed.isEmpty ? nil : trimmed
    }

    func optionalString(_ name: String) throws(ConfigurationError) -> String? {
        value(name)
    }

    func flag(_ name: String, default fallback: Bool) throws(ConfigurationError) -> Bool {
        guard let raw = value(name) else { return fallback }
        switch raw.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw ConfigurationError(variable: name, reason: "must be on or off (1 or 0), got \"\(raw)\"")
        }
    }

    func string(_ name: String, default fallback: String) throws(ConfigurationError) -> String {
        value(name) ?? fallback
    }

    func url(_ name: String, schemes: Set<String>, default fallback: String) throws(ConfigurationError) -> String {
        guard let raw = value(name) else { return fallback }
        guard let colon = raw.firstIndex(of: ":"), schemes.contains(raw[..<colon].lowercased()),
              raw[colon...].hasPrefix("://"), raw.count > raw.distance(from: raw.startIndex, to: colon) + 3
        else {
            let expected = schemes.sorted().map { "\($0)://" }.joined(separator: " or ")
            throw ConfigurationError(variable: name, reason: "must be a URL starting with \(expected), got \"\(raw)\"")
        }
        return raw.hasSuffix("/") && schemes.contains("http") ? String(raw.dropLast()) : raw
    }

    func integer(_ name: String, default fallback: Int, range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let raw = value(name) else { return fallback }
        guard let number = Int(raw), range.contains(number) else {
            throw ConfigurationError(variable: name, reason: "must be an integer in \(range.lowerBound)...\(range.upperBound), got \"\(raw)\"")
        }
        return number
    }

    func seconds(_ name: String, default fallback: Double) throws(ConfigurationError) -> Double {
        guard let raw = value(name) else { return fallback }
        guard let number = Double(raw), number.isFinite, number > 0, number <= 86400 else {
            throw ConfigurationError(variable: name, reason: "must be a number of seconds in (0, 86400], got \"\(raw)\"")
        }
        return number
    }

    func choice<Choice: RawRepresentable & CaseIterable>(_ name: String, default fallback: Choice) throws(ConfigurationError) -> Choice
    where Choice.RawValue == String {
        guard let raw = value(name) else { return fallback }
        guard let choice = Choice(rawValue: raw.lowercased()) else {
            let allowed = Choice.allCases.map(\.rawValue).joined(separator: "|")
            throw ConfigurationError(variable: name, reason: "must be one of \(allowed), got \"\(raw)\"")
        }
        return choice
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
