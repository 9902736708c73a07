import Foundation
import HeraldCore
import Hummingbird
import Logging
import Prometheus
import Testing

@testable import HeraldHTTP

@Suite("OpenAPI document: every registered route is described, and every described route is registered")
struct OpenAPIRouteTests {
    /// The operations of the embedded document, as `METHOD /path/{param}`.
    static func documentedOperations() throws -> Set<String> {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(PackageResources.openapi_json)) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
        return Set(paths.flatMap { path, item in item.keys.filter(methods.contains).map { "\($0.uppercased()) \(path)" } })
    }

    @Test("the application's router and the document list the same operations (development mode: all routes)")
    func routesMatchDocument() async throws {
        // Development mode without a JWT secret registers every route there is, /dev/token included. Nothing
        // connects: the application is built, never run.
        let configuration = try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1"])
        let router = Router(context: HeraldRequestContext.self)
        _ = try await HeraldApplication.build(
            configuration: configuration, registry: PrometheusCollectorRegistry(), logger: Logger(label: "test"), router: router
        )
        let registered = Set(router.routes.map { "\($0.method.rawValue) \($0.path.description)" })
        let documented = try Self.documentedOperations()
        #expect(registered.contains("GET /chats/sse/{thread_id}"), "route patterns as the document spells them: \(registered.sorted())")
        #expect(registered.subtracting(documented).isEmpty, "routes the document does not describe: \(registered.subtracting(documented).sorted())")
        #expect(documented.subtracting(registered).isEmpty, "documented operations with no route: \(documented.subtracting(registered).sorted())")
    }
}
