import Foundation
import HeraldTestSupport
import Testing

/// The chat page's HTTP side: what `GET /` and `/ui/` serve, the development sign-in endpoint, heartbeat events.
@Suite("chat page: HTTP", .serialized, .timeLimit(.minutes(3)))
struct ChatPageHTTPTests {
    /// What `make run` starts: no JWT secret, insecure development mode.
    static let developmentMode = ["HERALD_JWT_SECRET": "", "HERALD_INSECURE_DEV": "1"]

    @Test("GET / and /ui/ assets: right content types, strict CSP, nosniff, no referrer; no inline script")
    func pageAndAssets() async throws {
        try await withStack { stack in
            let assets = [
                ("/", "text/html; charset=utf-8"), ("/ui/app.js", "text/javascript; charset=utf-8"),
                ("/ui/thread-stream.js", "text/javascript; charset=utf-8"), ("/ui/style.css", "text/css; charset=utf-8"),
            ]
            for (path, contentType) in assets {
                let response = try await TestHTTPClient.request("GET", stack.url + path)
                #expect(response.status == 200, "\(path)")
                #expect(response.header("Content-Type") == contentType, "\(path)")
                #expect(response.header("X-Content-Type-Options") == "nosniff", "\(path)")
                #expect(response.header("Referrer-Policy") == "no-referrer", "\(path)")
                let policy = try #require(response.header("Content-Security-Policy"), "\(path)")
                for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
                    #expect(policy.contains(directive), "\(path): \(policy)")
                }
                #expect(!policy.contains("unsafe"), "\(path): \(policy)")
                #expect(!response.body.isEmpty, "\(path)")
            }

            let html = try await TestHTTPClient.request("GET", stack.url + "/").text
            #expect(html.contains(#"<script type="module" src="/ui/app.js"></script>"#))
            #expect(html.contains(#"<link rel="stylesheet" href="/ui/style.css">"#))
            // Every script is a file: an inline one would be refused by the policy anyway.
            let scripts = html.components(separatedBy: "<script").dropFirst()
            #expect(!scripts.isEmpty && scripts.allSatisfy { $0.hasPrefix(#" type="module" src="/ui/"#) })
            #expect(!html.contains("http://") && !html.contains("https://"), "the page loads nothing from elsewhere")
            let app = try await TestHTTPClient.request("GET", stack.url + "/ui/app.js").text
            #expect(app.contains(#"import { ThreadStream } from "./thread-stream.js";"#))
            #expect(!app.contains("innerHTML") && !app.contains("insertAdjacentHTML"))

            let missing = try await TestHTTPClient.request("GET", stack.url + "/ui/missing.js")
            #expect(missing.status == 404)
        }
    }

    @Test("POST /dev/token does not exist when Herald has a JWT secret")
    func developmentTokenOffWithSecret() async throws {
        try await withStack { stack in
            let response = try await TestHTTPClient.request("POST", stack.url + "/dev/token", json: #"{"user":"mallory"}"#)
            #expect(response.status == 404)
            #expect(response.text.contains("not_found"))
        }
    }

    @Test("development mode: POST /dev/token mints a token for a name; bad input is a 4xx")
    func developmentToken() async throws {
        try await withStack(environment: Self.developmentMode) { stack in
            let response = try await TestHTTPClient.request("POST", stack.url + "/dev/token", json: #"{"user":" carol "}"#)
            #expect(response.status == 200, "\(response.text)")
            let body = try #require(try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])
            #expect(body["user"] as? String == "carol")
            let token = try #require(body["token"] as? String)
            let carol = API(stack.url, token: token)
            let thread = try await carol.createThread(title: "carol's")
            #expect(try await carol.request("GET", "/chats/\(thread)").status == 200)

            let refused: [(String, Int)] = [
                (#"{}"#, 422), (#"{"user":"   "}"#, 422), (#"{"user":5}"#, 422), (#"{"user":"x","admin":true}"#, 422),
                ("not json", 400), (#"{"user":"\#(String(repeating: "u", count: 300))"}"#, 422),
            ]
            for (body, status) in refused {
                let answer = try await TestHTTPClient.request("POST", stack.url + "/dev/token", json: body)
                #expect(answer.status == status, "\(body.prefix(40)): \(answer.text)")
            }
        }
    }

    @Test("?heartbeat=event: a heartbeat event with the interval at once and every interval, without an id")
    func heartbeatEvents() async throws {
        try await withStack(environment: ["HERALD_HEARTBEAT_SECONDS": "0.2"]) { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread, query: "?heartbeat=event")
            let events = try await stream.waitForEvents(count: 3, timeout: .seconds(5))
            for event in events {
                #expect(event.type == "heartbeat")
                #expect(event.object["interval_seconds"] as? Double == 0.2)
                #expect(event.lastEventID.isEmpty)
            }
            #expect(!stream.comments.contains("heartbeat"), "heartbeats come as events only")

            let plain = try await api.openStream(thread)
            try await plain.waitForComment(containing: "heartbeat", timeout: .seconds(3))
            #expect(plain.events.isEmpty)

            let bad = try await api.request("GET", "/chats/sse/\(thread)?heartbeat=sometimes")
            #expect(bad.status == 422)
            #expect(bad.text.contains("heartbeat"))
        }
    }
}
