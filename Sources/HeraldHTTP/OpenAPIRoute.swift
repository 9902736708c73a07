import Hummingbird
import NIOCore

/// `GET /openapi.json`: the OpenAPI 3.1 description of this API (OpenAPI/openapi.json, compiled into the binary).
struct OpenAPIRoute {
    static let document = ByteBuffer(bytes: PackageResources.openapi_json)

    func register(on router: Router<HeraldRequestContext>) {
        router.get("openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: Self.document))
        }
    }
}
