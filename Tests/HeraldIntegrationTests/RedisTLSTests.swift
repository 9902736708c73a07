import Foundation
import HeraldTestSupport
import Testing

/// Redis over TLS (`rediss://`), against a real `redis-server` that speaks only TLS, with a CA and certificates
/// made for the test.
@Suite("Redis over TLS", .timeLimit(.minutes(3)))
struct RedisTLSTests {
    @Test("rediss:// with a private CA: the whole loop works, and a killed subscriber connection still delivers every frame once")
    func loopOverTLS() async throws {
        let certificates = try TestCertificates.make()
        try await withStack(redisTLS: certificates) { stack in
            #expect(stack.redis.url.hasPrefix("rediss://"))
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            _ = try await api.send(thread, "over TLS")
            try await eventually("the run completes") { stream.events.contains { $0.object["status"] as? String == "completed" } }

            #expect(try await stack.redis.command("CLIENT", "KILL", "TYPE", "pubsub") == "1")
            try await eventually("the subscriber is back") { await api.isReady() }
            _ = try await api.send(thread, "[[silent]] after the subscriber came back")
            try await eventually("the new message arrives") {
                stream.events.contains { ($0.object["message"] as? [String: Any])?["content"] as? String == "[[silent]] after the subscriber came back" }
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(stream.events.map(\.lastEventID) == (try await stack.logIDs(thread)))
            await stream.connection.closeGracefully()
        }
    }

    @Test("an unknown CA, a certificate for another name, plain redis:// to the TLS port: the node stays unready and says why")
    func refusedConnections() async throws {
        let certificates = try TestCertificates.make()
        let otherCA = try TestCertificates.make()
        let otherName = try TestCertificates.make(serverNames: ["redis.example.test"], loopbackAddress: false)
        try await withStack(redisTLS: certificates) { stack in
            let misnamed = try await RedisServer.start(tls: otherName)
            defer { misnamed.terminate() }
            let cases: [(String, [String: String], String)] = [
                ("unknown CA", ["REDIS_TLS_CA_FILE": otherCA.authority], "certificate"),
                ("another name", ["REDIS_URL": misnamed.url, "REDIS_TLS_CA_FILE": otherName.authority], "hostname"),
                ("plain to TLS", ["REDIS_URL": "redis://127.0.0.1:\(stack.redis.port)", "REDIS_TLS_CA_FILE": ""], ""),
            ]
            for (name, changes, reason) in cases {
                let port = freeTCPPort()
                var environment = stack.nodes[0].environment
                environment["HERALD_PORT"] = String(port)
                environment["PUBLIC_URL"] = "http://127.0.0.1:\(port)"
                environment.merge(changes) { _, new in new }
                let node = try ChildProcess.start(builtProduct("herald"), ["serve"], environment: environment)
                defer { node.terminate() }
                try await eventually("\(name): /readyz answers") {
                    (try? await TestHTTPClient.request("GET", "http://127.0.0.1:\(port)/readyz", timeout: .seconds(2)))?.status == 503
                }
                let ready = try await TestHTTPClient.request("GET", "http://127.0.0.1:\(port)/readyz")
                #expect(ready.text.contains(#""redis":"unavailable""#), "\(name): \(ready.text)")
                if !reason.isEmpty {
                    try await eventually("\(name): the log names the TLS failure") {
                        node.log().contains("Redis TLS") && node.log().lowercased().contains(reason)
                    }
                }
            }
        }
    }
}
