import Testing

@testable import HeraldCore

@Suite("configuration: identity provider")
struct IdentityProviderSettingsTests {
    @Test("an issuer replaces the JWT secret; the issuer is kept verbatim; audiences, user claim, leeway")
    func issuer() throws {
        let configuration = try HeraldConfiguration.fromEnvironment([
            "HERALD_JWT_ISSUER": "https://tenant.auth0.com/", "HERALD_JWT_AUDIENCE": "api, app", "HERALD_JWT_USER_CLAIM": "email",
            "HERALD_JWT_LEEWAY_SECONDS": "5",
        ])
        #expect(configuration.jwtSecret == nil && !configuration.developmentMode)
        #expect(configuration.jwtLeewaySeconds == 5)
        let provider = try #require(configuration.identityProvider)
        #expect(provider.keySource == .discovery(issuer: "https://tenant.auth0.com/"))
        #expect(provider.issuer == "https://tenant.auth0.com/")
        #expect(provider.audiences == ["api", "app"])
        #expect(provider.userClaim == "email")
        #expect(provider.startupTimeoutSeconds == 10)
    }

    @Test("a JWKS URL is fetched directly, with or without an issuer to check; defaults")
    func jwksURL() throws {
        let direct = try HeraldConfiguration.fromEnvironment(["HERALD_JWT_JWKS_URL": "https://id.example/keys"])
        #expect(direct.identityProvider == IdentityProviderSettings(keySource: .jwks(url: "https://id.example/keys")))
        #expect(direct.jwtLeewaySeconds == 60)
        let both = try HeraldConfiguration.fromEnvironment([
            "HERALD_JWT_JWKS_URL": "https://id.example/keys", "HERALD_JWT_ISSUER": "https://id.example", "HERALD_JWT_SECRET": String(repeating: "k", count: 32),
        ])
        #expect(both.identityProvider?.keySource == .jwks(url: "https://id.example/keys"))
        #expect(both.identityProvider?.issuer == "https://id.example")
        #expect(both.jwtSecret != nil)
        #expect(try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1"]).identityProvider == nil)
    }

    @Test("bad or orphaned provider settings name their variable", arguments: [
        ("HERALD_JWT_ISSUER", "tenant.auth0.com"), ("HERALD_JWT_JWKS_URL", "ftp://x/keys"), ("HERALD_JWT_LEEWAY_SECONDS", "-1"),
        ("HERALD_JWT_LEEWAY_SECONDS", "3601"), ("HERALD_JWT_STARTUP_TIMEOUT_SECONDS", "0"), ("HERALD_JWT_AUDIENCE", "api"),
        ("HERALD_JWT_USER_CLAIM", "email"),
    ])
    func badValues(variable: String, value: String) {
        var environment = ["HERALD_INSECURE_DEV": "1"]
        if variable == "HERALD_JWT_STARTUP_TIMEOUT_SECONDS" { environment["HERALD_JWT_ISSUER"] = "https://id.example" }
        environment[variable] = value
        do {
            _ = try HeraldConfiguration.fromEnvironment(environment)
            Issue.record("accepted \(variable)=\(value)")
        } catch {
            #expect(error.variable == variable, "\(error)")
        }
    }
}
