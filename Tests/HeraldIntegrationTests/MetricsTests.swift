import Foundation
import HeraldTestSupport
import Testing

@Suite("metrics: what /metrics shows after real requests", .serialized, .timeLimit(.minutes(3)))
struct MetricsTests {
    @Test("HTTP requests by route pattern and status, webhook, publish, trigger and pool timings; no ids in labels")
    func seriesAfterRealTraffic() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let sent = try await api.send(thread, "measure me")
            try await eventually("the run completes") { stream.events.contains { $0.object["status"] as? String == "completed" } }
            #expect(try await api.request("GET", "/chats/not-a-uuid").status == 400)
            #expect(try await api.request("GET", "/no/such/route").status == 404)
            #expect(try await api.request("GET", "/chats/\(thread)").status == 200)
            await stream.connection.closeGracefully()

            let scrape = try await PrometheusScrape.scrape(stack.url)
            let requests = "herald_http_requests_total", durations = "herald_http_request_duration_seconds"
            #expect(scrape.total(requests, ["route": "/chats/{thread_id}/send", "method": "POST", "status": "202"]) == 1, "\(scrape.text)")
            #expect(scrape.total(requests, ["route": "/chats/{thread_id}", "method": "GET", "status": "200"]) == 1)
            #expect(scrape.total(requests, ["route": "/chats/{thread_id}", "method": "GET", "status": "400"]) == 1)
            #expect(scrape.total(requests, ["route": "NotFound", "method": "GET", "status": "404"]) == 1)
            #expect(scrape.total(requests, ["route": "/webhook/chat-response", "method": "POST", "status": "200"]) ?? 0 >= 4)
            // Refused requests are timed too.
            #expect(scrape.total("\(durations)_count", ["route": "/chats/{thread_id}", "status": "400"]) == 1)
            #expect(scrape.total("\(durations)_count", ["route": "NotFound", "status": "404"]) == 1)
            let sendDuration = ["route": "/chats/{thread_id}/send", "method": "POST", "status": "202"]
            #expect(scrape.total("\(durations)_count", sendDuration) == 1)
            let sendSeconds = try #require(scrape.total("\(durations)_sum", sendDuration))
            #expect(sendSeconds > 0 && sendSeconds < 10)
            // Route labels are patterns from a fixed set: never a path with an id in it.
            let routes = Set(scrape.labelSets(requests).compactMap { $0["route"] })
            #expect(routes.allSatisfy { $0 == "NotFound" || $0 == "Unknown" || !$0.contains(where: \.isNumber) || $0.contains("{") }, "\(routes)")
            for id in [thread, sent.run, sent.message, sent.assistantMessage, "alice"] {
                #expect(!scrape.text.contains(id), "\(id) appears in /metrics")
            }

            // The demo agent posts three deltas and the result: each webhook timed by its outcome.
            #expect(scrape.total("herald_webhook_duration_seconds_count", ["outcome": "accepted"]) ?? 0 >= 4)
            // Published: the send's two frames, running, the final two (one script each), and three deltas.
            #expect(scrape.total("herald_publish_duration_seconds_count", ["kind": "frames"]) ?? 0 >= 3)
            #expect(scrape.total("herald_publish_duration_seconds_count", ["kind": "delta"]) ?? 0 >= 3)
            #expect(scrape.total("herald_agent_trigger_duration_seconds_count", ["outcome": "accepted"]) == 1)
            let triggerSeconds = try #require(scrape.total("herald_agent_trigger_duration_seconds_sum", ["outcome": "accepted"]))
            #expect(triggerSeconds > 0 && triggerSeconds < 15)
            #expect(scrape.total("herald_postgres_pool_wait_seconds_count") ?? 0 >= 5)
            // The stream above received the run's frames: each frame's way from publish to the socket is timed.
            #expect(scrape.total("herald_frame_delivery_seconds_count") ?? 0 >= 1)
            #expect(scrape.total("herald_stream_queued_frames") == 0)
            // The first command waited for the connection to open.
            #expect(scrape.total("herald_redis_connect_wait_seconds_count") ?? 0 >= 1)
            // The dashboard and the operations guide use the names /metrics has.
            let documented = try String(contentsOfFile: "\(packageRoot())/docs/operations.md", encoding: .utf8)
            let dashboard = try String(contentsOfFile: "\(packageRoot())/docs/grafana-dashboard.json", encoding: .utf8)
            let scraped = Set(scrape.samples.map(\.name).filter { $0.hasPrefix("herald_") }.map(Self.family))
            let charted = Set(Self.metricNames(in: dashboard).map(Self.family))
            let undocumented = scraped.union(charted).filter { !documented.contains("`\($0)`") }
            #expect(undocumented.isEmpty, "scraped or charted but not in docs/operations.md: \(undocumented.sorted())")
            for family in ["herald_http_requests_total", "herald_http_request_duration_seconds", "herald_webhook_duration_seconds",
                           "herald_publish_duration_seconds", "herald_agent_trigger_duration_seconds", "herald_postgres_pool_wait_seconds"] {
                #expect(charted.contains(family) && scraped.contains(family), "\(family)")
            }
            // Histograms are whole: the +Inf bucket holds every observation.
            for name in ["herald_publish_duration_seconds", "herald_postgres_pool_wait_seconds", durations] {
                #expect(scrape.total("\(name)_bucket", ["le": "+Inf"]) == scrape.total("\(name)_count"), "\(name)")
            }
        }
    }

    /// `herald_…` names in `text`.
    static func metricNames(in text: String) -> [String] {
        text.matches(of: /herald_[a-z_]+/).map { String($0.output) }
    }

    /// A histogram's family name from its `_bucket`, `_sum` and `_count` series.
    static func family(_ name: String) -> String {
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            return String(name.dropLast(suffix.count))
        }
        return name
    }

    @Test("an unreachable engine, an unsigned webhook and Redis going away each show in their series")
    func failuresAreCounted() async throws {
        try await withStack(agent: .unreachable, environment: ["HERALD_AGENT_MAX_ATTEMPTS": "1"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            _ = try await api.send(thread, "nobody answers")
            try await eventually("the trigger gives up") {
                try await PrometheusScrape.scrape(stack.url).total("herald_agent_trigger_duration_seconds_count", ["outcome": "unreachable"]) == 1
            }
            let unsigned = try await TestHTTPClient.request("POST", "\(stack.url)/webhook/chat-response", body: Array("{}".utf8))
            #expect(unsigned.status == 401)
            try await stack.redis.stop()
            let send = try await api.request(
                "POST", "/chats/\(thread)/send", headers: [("Content-Type", "application/json")], body: Array(#"{"content":"x"}"#.utf8)
            )
            #expect(send.status == 503)

            let scrape = try await PrometheusScrape.scrape(stack.url)
            #expect(scrape.total("herald_webhook_duration_seconds_count", ["outcome": "unauthorized"]) == 1, "\(scrape.text)")
            #expect(scrape.total("herald_redis_errors_total") ?? 0 >= 1)
            #expect(scrape.total("herald_http_requests_total", ["route": "/chats/{thread_id}/send", "status": "503"]) == 1)
        }
    }
}
