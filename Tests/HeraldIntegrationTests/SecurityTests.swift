import Foundation
import HeraldCore
import HeraldTestSupport
import Testing

@Suite("security: users, engines, browsers, limits", .serialized, .timeLimit(.minutes(3)))
struct SecurityTests {
    @Test("auth matrix: every /chats route × no token, expired, bad signature, alg none, other user, right token")
    func authMatrix() async throws {
        try await withStack { stack in
            let alice = stack.api(user: "alice")
            let thread = try await alice.createThread()
            let credentials: [(name: String, headers: [(String, String)], isOwner: Bool, valid: Bool)] = [
                ("no token", [], false, false),
                ("expired", [("Authorization", "Bearer \(TestTokens.hs256(user: "alice", expiresIn: -60))")], false, false),
                ("bad signature", [("Authorization", "Bearer \(TestTokens.hs256(user: "alice", secret: "some-other-secret-0123456789abcdef"))")], false, false),
                ("alg none", [("Authorization", "Bearer \(TestTokens.unsigned(user: "alice"))")], false, false),
                ("garbage", [("Authorization", "Bearer not.a.jwt")], false, false),
                ("other user", [("Authorization", "Bearer \(try #require(stack.tokens["bob"]))")], false, true),
                ("right token", [("Authorization", "Bearer \(TestTokens.hs256(user: "alice"))")], true, true),
            ]
            let json = [("Content-Type", "application/json")]
            for credential in credentials {
                let anonymous = API(stack.url, token: nil)
                func call(_ method: String, _ path: String, _ body: String? = nil) async throws -> Int {
                    try await anonymous.request(method, path, headers: credential.headers + (body == nil ? [] : json), body: body.map { Array($0.utf8) }).status
                }
                let denied = credential.valid ? nil : 401
                #expect(try await call("POST", "/chats", #"{"title":"x"}"#) == (denied ?? 201), "\(credential.name) POST /chats")
                #expect(try await call("GET", "/chats") == (denied ?? 200), "\(credential.name) GET /chats")
                let ownerOr404 = denied ?? (credential.isOwner ? 200 : 404)
                #expect(try await call("GET", "/chats/\(thread)") == ownerOr404, "\(credential.name) GET thread")
                #expect(try await call("GET", "/chats/\(thread)/messages") == ownerOr404, "\(credential.name) GET messages")
                #expect(try await call("POST", "/chats/\(thread)/send", #"{"content":"[[silent]] hi"}"#) == (denied ?? (credential.isOwner ? 202 : 404)), "\(credential.name) send")
                if credential.isOwner {
                    let stream = try await TestStreamingConnection.open("\(stack.url)/chats/sse/\(thread)", headers: credential.headers)
                    #expect(stream.status == 200)
                    stream.kill()
                } else {
                    #expect(try await call("GET", "/chats/sse/\(thread)") == ownerOr404, "\(credential.name) stream")
                }
                #expect(try await call("DELETE", "/chats/\(thread)") == (denied ?? (credential.isOwner ? 204 : 404)), "\(credential.name) DELETE")
            }
            // Another user's thread looks exactly like a missing one.
            let bob = stack.api(user: "bob")
            let foreign = try await bob.request("GET", "/chats/\(try await alice.createThread())")
            let missing = try await bob.request("GET", "/chats/\(UUID().uuidString.lowercased())")
            #expect(foreign.status == 404 && missing.status == 404)
            #expect(foreign.body == missing.body)
            // A 401 says how to authenticate.
            let unauthorized = try await API(stack.url, token: nil).request("GET", "/chats")
            #expect(unauthorized.header("WWW-Authenticate") == "Bearer")
            #expect((try API(stack.url, token: nil).json(unauthorized)["error"] as? [String: Any])?["code"] as? String == "unauthorized")
        }
    }

    @Test("EventSource can authenticate with the access_token query parameter or cookie; the CLI mints tokens")
    func eventSourceCredentials() async throws {
        try await withStack { stack in
            let thread = try await stack.api().createThread()
            let token = try #require(stack.tokens["alice"])
            let byQuery = try await TestStreamingConnection.open("\(stack.url)/chats/sse/\(thread)?access_token=\(token)")
            #expect(byQuery.status == 200)
            byQuery.kill()
            let byCookie = try await TestStreamingConnection.open("\(stack.url)/chats/sse/\(thread)", headers: [("Cookie", "access_token=\(token)")])
            #expect(byCookie.status == 200)
            byCookie.kill()
            let expired = try await Stack.mintToken(user: "alice", ttl: "1s")
            try await Task.sleep(for: .seconds(2))
            #expect(try await API(stack.url, token: expired).request("GET", "/chats").status == 401)
        }
    }

    @Test("webhooks: unsigned, badly signed, stale or tampered deliveries get 401 and change nothing")
    func webhookSignatures() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            let sent = try await api.send(thread, "[[silent]] sign here")
            _ = try await stream.waitForEvents(count: 3)
            let body = Array(#"{"run_id":"\#(sent.run)","event":"completed","content":"forged"}"#.utf8)
            let signer = try StandardWebhooks(secrets: [Stack.webhookSecret])
            let wrongSigner = try StandardWebhooks(secrets: ["whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA=="])
            let now = Int(Date().timeIntervalSince1970)
            func headers(id: String = "msg_x", timestamp: Int = now, signer: StandardWebhooks = signer, signedBody: [UInt8] = body) -> [(String, String)] {
                [("webhook-id", id), ("webhook-timestamp", String(timestamp)), ("webhook-signature", signer.sign(id: id, timestamp: timestamp, body: signedBody))]
            }
            let attempts: [(String, [(String, String)])] = [
                ("unsigned", []),
                ("wrong secret", headers(signer: wrongSigner)),
                ("stale", headers(timestamp: now - 600)),
                ("future", headers(timestamp: now + 600)),
                ("tampered body", headers(signedBody: Array(#"{"run_id":"x"}"#.utf8))),
                ("missing signature", [("webhook-id", "msg_x"), ("webhook-timestamp", String(now))]),
                ("missing id", Array(headers().dropFirst())),
                ("token of nothing", []),
            ]
            for (name, extra) in attempts {
                let query = name == "token of nothing" ? "?run_id=\(sent.run)&token=guessed" : ""
                let response = try await TestHTTPClient.request(
                    "POST", "\(stack.url)/webhook/chat-response\(query)", headers: [("Content-Type", "application/json")] + extra, body: body
                )
                #expect(response.status == 401, "\(name): \(response.status) \(response.text)")
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(stream.events.count == 3, "nothing was published")
            #expect(try await api.messages(thread).count == 1, "nothing was stored")
            // Rotation: a header with an old and the current signature passes.
            let rotated = headers().map { $0.0 == "webhook-signature" ? ($0.0, "v1,AAAA \($0.1)") : $0 }
            let accepted = try await TestHTTPClient.request(
                "POST", "\(stack.url)/webhook/chat-response", headers: [("Content-Type", "application/json")] + rotated, body: body
            )
            #expect(accepted.status == 200, "\(accepted.text)")
            #expect(try await api.messages(thread).count == 2)
        }
    }

    @Test("per-run callback tokens: the whole loop works unsigned; a token is refused for another run, another thread, or after its run ended")
    func callbackTokens() async throws {
        try await withStack(agent: .demoUnsigned) { stack in
            let api = stack.api()
            // The LangGraph way: no signature, only the callback URL's token.
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            _ = try await api.send(thread, "unsigned hello")
            let events = try await stream.waitForEvents(count: 8)
            #expect(events.last?.object["status"] as? String == "completed")

            let otherThread = try await api.createThread()
            let silent = try await api.send(thread, "[[silent]] first")
            let other = try await api.send(otherThread, "[[silent]] second")
            // The engine gets a run after the send's 202, in the background.
            try await eventually("the engine has both runs") { try await stack.engineRuns() == 3 }
            let runs = try API(stack.agentURL, token: nil).json(try await TestHTTPClient.request("GET", "\(stack.agentURL)/runs"))["runs"] as? [[String: Any]]
            func callback(for run: String) throws -> String {
                try #require(runs?.compactMap { $0["webhook"] as? String }.first { $0.contains(run) })
            }
            let silentURL = try callback(for: silent.run), otherURL = try callback(for: other.run)
            let token = try #require(silentURL.components(separatedBy: "token=").last)
            func post(_ url: String, _ json: String) async throws -> TestHTTPResponse {
                try await TestHTTPClient.request("POST", url, headers: [("Content-Type", "text/plain")], body: Array(json.utf8))
            }
            // Another run's URL with this token.
            let swapped = otherURL.replacingOccurrences(of: try #require(otherURL.components(separatedBy: "token=").last), with: token)
            #expect(try await post(swapped, #"{"event":"completed","content":"x"}"#).status == 401)
            // Another thread claimed in the body.
            #expect(try await post(silentURL, #"{"event":"completed","thread_id":"\#(otherThread)","content":"x"}"#).status == 401)
            // The right use works, once; afterwards the token is dead.
            #expect(try await post(silentURL, #"{"event":"completed","content":"right"}"#).status == 200)
            #expect(try await post(silentURL, #"{"event":"completed","content":"again"}"#).status == 401)
            #expect(try await api.messages(thread).compactMap { $0["content"] as? String }.filter { $0 == "right" || $0 == "again" || $0 == "x" } == ["right"])
            #expect(try await api.messages(otherThread).count == 1)
        }
    }

    @Test("CORS: exact configured origins with credentials, preflight answered, others get nothing")
    func cors() async throws {
        try await withStack(environment: ["HERALD_CORS_ORIGINS": "https://app.example.com"]) { stack in
            let preflight = try await TestHTTPClient.request(
                "OPTIONS", "\(stack.url)/chats",
                headers: [("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "authorization")]
            )
            #expect(preflight.status == 204)
            #expect(preflight.header("Access-Control-Allow-Origin") == "https://app.example.com")
            #expect(preflight.header("Access-Control-Allow-Credentials") == "true")
            #expect(preflight.header("Access-Control-Allow-Headers")?.lowercased().contains("authorization") == true)
            let foreign = try await TestHTTPClient.request(
                "OPTIONS", "\(stack.url)/chats", headers: [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")]
            )
            #expect(foreign.status == 403)
            #expect(foreign.header("Access-Control-Allow-Origin") == nil)
            let api = stack.api()
            let allowed = try await api.request("GET", "/chats", headers: [("Origin", "https://app.example.com")])
            #expect(allowed.status == 200)
            #expect(allowed.header("Access-Control-Allow-Origin") == "https://app.example.com")
            #expect(allowed.header("Vary") == "Origin")
            let denied = try await api.request("GET", "/chats", headers: [("Origin", "https://evil.example")])
            #expect(denied.header("Access-Control-Allow-Origin") == nil)
            #expect(allowed.header("Access-Control-Allow-Origin") != "*")
        }
    }

    @Test("limits: sends per minute (429 + Retry-After) and streams per user")
    func rateLimits() async throws {
        try await withStack(environment: ["HERALD_SENDS_PER_MINUTE": "3", "HERALD_MAX_STREAMS_PER_USER": "2"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            for _ in 0..<3 { _ = try await api.send(thread, "[[silent]] ok") }
            let limited = try await api.request("POST", "/chats/\(thread)/send", headers: [("Content-Type", "application/json")], body: Array(#"{"content":"one too many"}"#.utf8))
            #expect(limited.status == 429)
            #expect(Int(limited.header("Retry-After") ?? "") ?? 0 >= 1)
            #expect((try api.json(limited)["error"] as? [String: Any])?["code"] as? String == "rate_limited")
            #expect(try await api.messages(thread).count == 3)
            // Another user has their own allowance.
            let bob = stack.api(user: "bob")
            _ = try await bob.send(try await bob.createThread(), "[[silent]] bob")

            let first = try await api.openStream(thread), second = try await api.openStream(thread)
            let third = try await api.request("GET", "/chats/sse/\(thread)")
            #expect(third.status == 429)
            first.connection.kill()
            try await eventually("a slot frees up when a stream ends") {
                let response = try await TestStreamingConnection.open("\(stack.url)/chats/sse/\(thread)", headers: api.authorization)
                defer { response.kill() }
                return response.status == 200
            }
            second.connection.kill()
        }
    }
}
