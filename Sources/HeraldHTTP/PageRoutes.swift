import Foundation
import HeraldCore
import HTTPTypes
import Hummingbird
import NIOCore

/// The chat page: `GET /` and its assets under `/ui/`, embedded in the binary (Page/, no build step), and in
/// development mode only, `POST /dev/token`, which lets the page sign in with a bare user name.
struct PageRoutes {
    let userTokens: UserTokens
    let configuration: HeraldConfiguration

    struct Asset: Sendable {
        let contentType: String
        /// Built once; every response shares it (copy on write, never written).
        let body: ByteBuffer

        init(contentType: String, bytes: [UInt8]) {
            self.contentType = contentType
            self.body = ByteBuffer(bytes: bytes)
        }
    }

    /// Every file the page is made of, by the path it is served at.
    static let assets: [String: Asset] = [
        "/": Asset(contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html),
        "/ui/app.js": Asset(contentType: "text/javascript; charset=utf-8", bytes: PackageResources.app_js),
        "/ui/thread-stream.js": Asset(contentType: "text/javascript; charset=utf-8", bytes: PackageResources.thread_stream_js),
        "/ui/style.css": Asset(contentType: "text/css; charset=utf-8", bytes: PackageResources.style_css),
    ]

    /// Scripts and styles from this origin only, never inline (injected markup could not run even if it got
    /// into the DOM); requests to this origin only; no framing, no `<base>`, no plugins.
    static let contentSecurityPolicy = [
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "img-src 'self'",
        "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
    ].joined(separator: "; ")

    /// How long a development token is valid: a working day of `make run`.
    static let developmentTokenLifetime: Duration = .seconds(24 * 3600)

    func register(on router: Router<HeraldRequestContext>) {
        for (path, asset) in Self.assets {
            router.get(RouterPath(path)) { _, _ in Self.response(for: asset) }
        }
        // Minting tokens for any name is only harmless when tokens are signed with the published development
        // secret anyway: with a real HERALD_JWT_SECRET, or outside development mode (an identity provider alone
        // signs the users in), the route does not exist.
        if configuration.developmentMode, configuration.jwtSecret == nil {
            router.post("dev/token", use: mintDevelopmentToken)
        }
    }

    static func response(for asset: Asset) -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: asset.contentType,
                .contentSecurityPolicy: contentSecurityPolicy,
                .xContentTypeOptions: "nosniff",
                HTTPField.Name("Referrer-Policy")!: "no-referrer",
                // The page is a few kilobytes; revalidating keeps a browser from running an outdated script
                // against a newer server.
                .cacheControl: "no-cache",
            ],
            body: .init(byteBuffer: asset.body)
        )
    }

    struct DevelopmentToken: Encodable {
        let user: String
        let token: String
    }

    @Sendable func mintDevelopmentToken(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        let fields = try Fields(
            object: try await RequestBody.jsonObject(of: request, limit: configuration.maxBodyBytes, maxDepth: configuration.maxJSONDepth),
            allowed: ["user"]
        )
        guard let user = try fields.optionalString("user", maxBytes: 256)?.trimmingCharacters(in: .whitespacesAndNewlines), !user.isEmpty
        else {
            throw APIError.invalid("user is required: 1 to 256 bytes")
        }
        let token = try await userTokens.mint(user: user, validFor: Self.developmentTokenLifetime)
        return try JSONResponse.make(.ok, DevelopmentToken(user: user, token: token))
    }
}
