import Foundation
import HeraldTestSupport
import Testing

/// The routes of thread management and the response cache's answers and frames, validated against the served OpenAPI
/// document like `OpenAPIContractTests` does for the rest.
@Suite("OpenAPI contract: batch delete, delete empty, rename and cached replies", .serialized, .timeLimit(.minutes(4)))
struct ThreadManagementContractTests {
    @Test("real answers of the new routes, and a cached reply's answer and frames, validate against the served document")
    func realTrafficMatchesDocument() async throws {
        try await withStack(environment: ["HERALD_CACHE_TTL_SECONDS": "60"]) { stack in
            let api = stack.api()
            let contract = ContractRecorder()
            func call(_ method: String, _ path: String, pattern: String, json body: String? = nil) async throws -> TestHTTPResponse {
                let response = if let body { try await api.request(method, path, json: body) } else { try await api.request(method, path) }
                contract.response(method, pattern, response)
                if let body, response.status < 300 { contract.request(method, pattern, body: Array(body.utf8)) }
                return response
            }
            let document = try await api.request("GET", "/openapi.json")

            let thread = try await api.createThread(title: "contract")
            #expect(try await call("PATCH", "/chats/\(thread)", pattern: "/chats/{thread_id}", json: #"{"title":"renamed"}"#).status == 200)
            #expect(try await call("PATCH", "/chats/\(thread)", pattern: "/chats/{thread_id}", json: #"{"title":null}"#).status == 200)
            #expect(try await call("PATCH", "/chats/\(thread)", pattern: "/chats/{thread_id}", json: #"{"title":7}"#).status == 422)
            #expect(try await call("PATCH", "/chats/\(UUID().uuidString)", pattern: "/chats/{thread_id}", json: #"{"title":"x"}"#).status == 404)

            // A miss that fills the cache, then a hit, both watched on their stream.
            let stream = try await api.connectedStream(thread)
            let send = #"{"content":"contract question","use_cache":true}"#
            #expect(try await call("POST", "/chats/\(thread)/send", pattern: "/chats/{thread_id}/send", json: send).status == 202)
            try await eventually("the reply is cached") {
                try await PrometheusScrape.scrape(stack.url).total("herald_response_cache_total", ["outcome": "stored"]) == 1
            }
            let hit = try await call("POST", "/chats/\(thread)/send", pattern: "/chats/{thread_id}/send", json: send)
            #expect(try api.json(hit)["cached"] as? Bool == true)
            try await eventually("both runs completed on the stream") {
                stream.events.filter { $0.object["status"] as? String == "completed" }.count == 2
            }
            #expect(stream.events.contains { $0.type == "delta" && $0.object["cached"] as? Bool == true })

            let empty = try await api.createThread(title: "empty")
            #expect(try await call("DELETE", "/chats/empty", pattern: "/chats/empty").status == 200)
            let other = try await api.createThread(title: "other")
            let batch = #"{"ids":["\#(other)","\#(empty)"]}"#
            #expect(try await call("POST", "/chats/batch-delete", pattern: "/chats/batch-delete", json: batch).status == 200)
            #expect(try await call("POST", "/chats/batch-delete", pattern: "/chats/batch-delete", json: #"{"ids":["x"]}"#).status == 400)
            #expect(try await call("POST", "/chats/batch-delete", pattern: "/chats/batch-delete", json: #"{"ids":7}"#).status == 422)
            #expect(try await call("POST", "/chats/batch-delete", pattern: "/chats/batch-delete", json: #"{"ids":["#).status == 400)
            #expect(try await call("POST", "/chats/batch-delete", pattern: "/chats/batch-delete", json: #"{"ids":["\#(thread)"]}"#).status == 200)
            try await stream.waitForEnd()

            contract.frames(of: stream)
            try await contract.check(document: document.body)
        }
    }
}
