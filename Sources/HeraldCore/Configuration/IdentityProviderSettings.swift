/// How tokens from an identity provider (Auth0, Okta, Keycloak, Firebase, Supabase, …) are verified:
/// where the provider's public keys come from and which claims a token must carry.
/// Tokens signed with `HERALD_JWT_SECRET` are Herald's own and do not use these settings.
public struct IdentityProviderSettings: Sendable, Equatable {
    /// Where the signing keys are fetched from.
    public enum KeySource: Sendable, Equatable {
        /// OpenID Connect discovery: `{issuer}/.well-known/openid-configuration` names the `jwks_uri`.
        case discovery(issuer: String)
        /// A JSON Web Key Set URL, fetched directly.
        case jwks(url: String)
    }

    public var keySource: KeySource
    /// The exact `iss` a token must carry; nil accepts any (only possible with a direct JWKS URL).
    public var issuer: String?
    /// Accepted `aud` values; when not empty, a token must name at least one of them.
    public var audiences: [String]
    /// The claim that names the user.
    public var userClaim: String
    /// How long start-up waits for the first key set before giving up.
    public var startupTimeoutSeconds: Double

    public init(
        keySource: KeySource, issuer: String? = nil, audiences: [String] = [], userClaim: String = "sub",
        startupTimeoutSeconds: Double = 10
    ) {
        self.keySource = keySource
        self.issuer = issuer
        self.audiences = audiences
        self.userClaim = userClaim
        self.startupTimeoutSeconds = startupTimeoutSeconds
    }
}

extension IdentityProviderSettings {
    /// The provider settings in `environment`, or nil when neither `HERALD_JWT_ISSUER` nor `HERALD_JWT_JWKS_URL`
    /// is set (then the settings that only make sense with a provider must be unset too).
    static func fromEnvironment(_ reader: EnvironmentReader) throws(ConfigurationError) -> IdentityProviderSettings? {
        // Validated as URLs, but kept verbatim: `iss` must match byte for byte, trailing slash included (Auth0's has one).
        _ = try reader.url("HERALD_JWT_ISSUER", schemes: ["http", "https"], default: "")
        _ = try reader.url("HERALD_JWT_JWKS_URL", schemes: ["http", "https"], default: "")
        let issuer = try reader.optionalString("HERALD_JWT_ISSUER")
        let jwksURL = try reader.optionalString("HERALD_JWT_JWKS_URL")
        let audiences = try reader.optionalString("HERALD_JWT_AUDIENCE")
            .map { $0.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init) } ?? []
        let userClaim = try reader.string("HERALD_JWT_USER_CLAIM", default: "sub")
        let startupTimeout = try reader.seconds("HERALD_JWT_STARTUP_TIMEOUT_SECONDS", default: 10)

        let keySource: KeySource
        if let jwksURL {
            keySource = .jwks(url: jwksURL)
        } else if let issuer {
            keySource = .discovery(issuer: issuer)
        } else {
            let providerOnly = ["HERALD_JWT_AUDIENCE", "HERALD_JWT_USER_CLAIM", "HERALD_JWT_STARTUP_TIMEOUT_SECONDS"]
            if let stray = providerOnly.first(where: { (try? reader.optionalString($0)) != nil }) {
                throw ConfigurationError(variable: stray, reason: "needs HERALD_JWT_ISSUER or HERALD_JWT_JWKS_URL")
            }
            return nil
        }
        return IdentityProviderSettings(
            keySource: keySource, issuer: issuer, audiences: audiences, userClaim: userClaim, startupTimeoutSeconds: startupTimeout
        )
    }
}
