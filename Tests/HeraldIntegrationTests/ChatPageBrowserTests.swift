import Foundation
import HeraldTestSupport
import Testing

/// The chat page in a real headless Chromium (Debian's chromium and chromium-driver), against a real stack in
/// development mode, as `make run` starts it.
@Suite("chat page in headless Chromium", .serialized, .timeLimit(.minutes(3)))
struct ChatPageBrowserTests {
    /// Development mode (sign-in by name); heartbeats every second, so a stale stream shows within 2 s; the
    /// demo agent paced so that a reply takes long enough to reload the page in the middle of it.
    static func withChatPage<T>(
        nodes: Int = 1, agent: Stack.Agent = .demo, environment: [String: String] = [:], tokenDelayMs: Int = 60,
        _ body: (Stack, ChromeDriver) async throws -> T
    ) async throws -> T {
        let driver = try await ChromeDriver.start()
        defer { driver.stop() }
        var settings = ChatPageHTTPTests.developmentMode
        settings["HERALD_HEARTBEAT_SECONDS"] = "1"
        settings.merge(environment) { _, override in override }
        return try await withStack(nodes: nodes, agent: agent, environment: settings, tokenDelayMs: tokenDelayMs) { stack in
            try await body(stack, driver)
        }
    }

    /// `words` words, so that the demo agent's reply is `words + 1` tokens.
    static func longMessage(words: Int) -> String {
        (1...words).map { "word\($0)" }.joined(separator: " ")
    }

    @Test("sign in by name, create a thread, send: the reply streams in, then shows as stored; run completes; delete")
    func streamsAReply() async throws {
        try await Self.withChatPage { stack, driver in
            let browser = try await driver.newBrowser()
            try await browser.signIn(as: "alice", at: stack.url)
            let thread = try await browser.createThread("First steps")
            try await eventually("the thread's title") { try await browser.text("#thread-title") == "First steps" }
            try await browser.waitForConnection("connected")

            try await browser.recordReplyUpdates()
            let content = "hello from the browser, " + Self.longMessage(words: 8)
            try await browser.send(content)
            try await browser.waitForMessages(
                [("user", "complete", content), ("assistant", "complete", "echo: \(content)")], "the stored reply"
            )
            try await eventually("run completed") { try await browser.text("#run-status") == "completed" }

            // The reply was drawn token by token before the stored message replaced it, each update growing it.
            let updates = try await browser.replyUpdates()
            let streamed = updates.filter { $0.status == "streaming" }.map(\.text)
            #expect(streamed.count > 1, "updates: \(updates)")
            #expect(zip(streamed, streamed.dropFirst()).allSatisfy { $1.hasPrefix($0) && $1 != $0 }, "\(streamed)")
            #expect(streamed.allSatisfy { "echo: \(content)".hasPrefix($0) }, "\(streamed)")
            #expect(updates.last?.status == "complete")

            try await saveScreenshot(of: browser)

            // Messages come from REST after a reload, too.
            try await browser.reload()
            try await browser.waitForMessages(
                [("user", "complete", content), ("assistant", "complete", "echo: \(content)")], "the thread after a reload"
            )

            try await browser.click("#delete-thread")
            try await eventually("the confirmation") { try await browser.dialogText() != nil }
            try await browser.acceptDialog()
            try await eventually("the thread closed") { try await browser.text("#thread-notice") == "This thread was deleted." }
            #expect(try await browser.messages().isEmpty)
            #expect(try await browser.threadTitles().isEmpty)
            #expect(try await API(stack.url, token: try await browser.token()).request("GET", "/chats/\(thread)").status == 404)
            await browser.quit()
        }
    }

    @Test("reload in the middle of a reply: it completes with no token repeated or lost")
    func reloadMidReply() async throws {
        try await Self.withChatPage { stack, driver in
            let browser = try await driver.newBrowser()
            try await browser.signIn(as: "alice", at: stack.url)
            _ = try await browser.createThread("reload")
            try await browser.waitForConnection("connected")
            let content = Self.longMessage(words: 30)
            let reply = "echo: \(content)"
            try await browser.send(content)

            var beforeReload = ""
            try await eventually("a few tokens of the reply") {
                beforeReload = try await browser.messages().last { $0.role == "assistant" && $0.status == "streaming" }?.text ?? ""
                return beforeReload.split(separator: " ").count >= 4
            }
            try await browser.reload()

            // From the first look after the reload, the reply holds what was shown before and only grows.
            var seen: [String] = []
            try await eventually(timeout: .seconds(15), "the stored reply") {
                let messages = try await browser.messages()
                if let last = messages.last, last.role == "assistant" { seen.append(last.text) }
                return messages.count == 2 && messages.last?.status == "complete"
            }
            let first = try #require(seen.first)
            #expect(first.hasPrefix(beforeReload), "before the reload: \(beforeReload); after: \(first)")
            #expect(seen.allSatisfy { reply.hasPrefix($0) }, "a shown text is not a prefix of the reply: \(seen)")
            #expect(seen.count > 1 && seen.dropLast().contains { $0 != reply }, "the reply was still streaming after the reload: \(seen)")
            #expect(try await browser.messages().map(\.text) == [content, reply])
            try await eventually("run completed") { try await browser.text("#run-status") == "completed" }
            await browser.quit()
        }
    }

    @Test("the node serving the stream stalls, then restarts: reconnecting, connected, the conversation complete and in order")
    func nodeStallsAndRestarts() async throws {
        try await Self.withChatPage(nodes: 2) { stack, driver in
            let browser = try await driver.newBrowser()
            try await browser.signIn(as: "alice", at: stack.url)
            let thread = try await browser.createThread("outages")
            try await browser.waitForConnection("connected")
            try await browser.send("before the outage")
            try await browser.waitForMessages(
                [("user", "complete", "before the outage"), ("assistant", "complete", "echo: before the outage")], "the first exchange"
            )
            // The same user, through the other node, while this page's node is away.
            let otherNode = API(stack.nodes[1].url, token: try await browser.token())

            // Stalled: the connection stays open but nothing comes, not even heartbeats.
            stack.node.process.signal(SIGSTOP)
            try await browser.waitForConnection("reconnecting", timeout: .seconds(10))
            _ = try await otherNode.send(thread, "while stalled")
            stack.node.process.signal(SIGCONT)
            try await browser.waitForConnection("connected", timeout: .seconds(15))
            try await browser.waitForMessages(Self.conversation(["before the outage", "while stalled"]), "what was sent while stalled")

            // Restarted: the stream ends, the browser retries until the node is back, then resumes.
            stack.node.process.signal(SIGTERM)
            try await browser.waitForConnection("reconnecting", timeout: .seconds(10))
            try await stack.node.process.waitForExit(timeout: .seconds(20))
            _ = try await otherNode.send(thread, "while restarting")
            let restarted = try await stack.restartedNode(0)
            defer { restarted.process.terminate() }
            try await browser.waitForConnection("connected", timeout: .seconds(20))
            try await browser.waitForMessages(
                Self.conversation(["before the outage", "while stalled", "while restarting"]), "what was sent while restarting"
            )

            try await browser.send("after the restart")
            try await browser.waitForMessages(
                Self.conversation(["before the outage", "while stalled", "while restarting", "after the restart"]),
                "the whole conversation, in order"
            )
            try await eventually("run completed") { try await browser.text("#run-status") == "completed" }
            await browser.quit()
        }
    }

    @Test("frames lost while the node stalled (log trimmed): resync, the page refetches the thread")
    func resyncRefetches() async throws {
        // A log of a few frames, trimmed by a long reply; tokens come fast so that the reply is quick.
        try await Self.withChatPage(nodes: 2, environment: ["HERALD_LOG_MAXLEN": "5"], tokenDelayMs: 1) { stack, driver in
            let browser = try await driver.newBrowser()
            try await browser.signIn(as: "alice", at: stack.url)
            let thread = try await browser.createThread("resync")
            try await browser.waitForConnection("connected")
            try await browser.send("first")
            try await browser.waitForMessages(Self.conversation(["first"]), "the first exchange")

            stack.node.process.signal(SIGSTOP)
            try await browser.waitForConnection("reconnecting", timeout: .seconds(10))
            // `MAXLEN ~` trims whole radix-tree nodes (about 100 entries): a reply of 300 tokens is sure to trim.
            let otherNode = API(stack.nodes[1].url, token: try await browser.token())
            let long = Self.longMessage(words: 300)
            _ = try await otherNode.send(thread, long)
            try await eventually(timeout: .seconds(20), "the long reply stored") { try await otherNode.messages(thread).count == 4 }
            stack.node.process.signal(SIGCONT)

            try await browser.waitForConnection("connected", timeout: .seconds(15))
            try await browser.waitForMessages(Self.conversation(["first", long]), "the thread as stored", timeout: .seconds(15))
            await browser.quit()
        }
    }

    @Test("a failed run: status failed, its error on the message; offline and back")
    func failedRunAndOffline() async throws {
        try await Self.withChatPage(agent: .unreachable, environment: ["HERALD_AGENT_MAX_ATTEMPTS": "1"]) { stack, driver in
            let browser = try await driver.newBrowser()
            try await browser.signIn(as: "alice", at: stack.url)
            _ = try await browser.createThread("no engine")
            try await browser.waitForConnection("connected")
            try await browser.send("anyone there?")
            try await eventually(timeout: .seconds(15), "run failed") { try await browser.text("#run-status") == "failed" }
            try await eventually("the error on the message") {
                let messages = try await browser.messages()
                return messages.count == 1 && messages[0].error.hasPrefix("Run failed: ") && messages[0].error.hasSuffix("(agent_unreachable)")
            }

            try await browser.setOffline(true)
            try await browser.waitForConnection("offline")
            try await browser.setOffline(false)
            try await browser.waitForConnection("connected", timeout: .seconds(15))
            await browser.quit()
        }
    }

    @Test("markup in a message or a title shows as text and runs nothing")
    func markupIsText() async throws {
        try await Self.withChatPage { stack, driver in
            let browser = try await driver.newBrowser()
            try await browser.signIn(as: "alice", at: stack.url)
            // Anything that would run reports here; the policy should stop it before it ever does.
            _ = try await browser.run("window.ran = []; window.alert = (x) => window.ran.push(String(x))")
            let title = "<b onmouseover=alert(2)>bold</b>"
            _ = try await browser.createThread(title)
            try await browser.waitForConnection("connected")
            let attack = "<img src=x onerror=alert(1)>"
            try await browser.send(attack)
            try await browser.waitForMessages(
                [("user", "complete", attack), ("assistant", "complete", "echo: \(attack)")], "the markup as text"
            )
            #expect(try await browser.threadTitles() == [title])
            try await eventually("the thread's title") { try await browser.text("#thread-title") == title }
            let injected = try await browser.run("return document.querySelectorAll('#messages img, .thread-list b, #thread-title b').length")
            #expect(injected as? Int == 0)
            #expect(try await browser.run("return window.ran") as? [String] == [])
            #expect(try await browser.dialogText() == nil)
            await browser.quit()
        }
    }

    @Test("another user in a second browser sees none of the first user's threads; thread list pages")
    func usersAreIsolated() async throws {
        try await Self.withChatPage { stack, driver in
            let alice = try await driver.newBrowser()
            try await alice.signIn(as: "alice", at: stack.url)
            let thread = try await alice.createThread("alice only")
            try await alice.send("a secret")
            try await alice.waitForMessages(
                [("user", "complete", "a secret"), ("assistant", "complete", "echo: a secret")], "alice's exchange"
            )

            // Bob signs in with a pasted token from the CLI.
            let bob = try await driver.newBrowser()
            try await bob.open(stack.url + "/")
            try await bob.type(try await Self.developmentToken(user: "bob"), into: "#token")
            try await bob.click("#token-sign-in button[type=submit]")
            try await eventually("bob signed in") { try await bob.text("#who") == "bob" }
            try await eventually("bob's thread list loaded") { try await bob.run("return !document.querySelector('#chat').hidden") as? Bool == true }
            #expect(try await bob.threadTitles().isEmpty)

            try await bob.open(stack.url + "/#\(thread)")
            try await eventually("alice's thread refused") {
                try await bob.text("#thread-notice") == "This thread does not exist (or is not yours)."
            }
            #expect(try await bob.messages().isEmpty)
            #expect(try await alice.threadTitles() == ["alice only"])

            // Twenty threads a page, then more on demand.
            let bobAPI = API(stack.url, token: try await bob.token())
            for index in 1...21 { _ = try await bobAPI.createThread(title: "bob \(index)") }
            try await bob.reload()
            try await eventually("the first page") { try await bob.threadTitles().count == 20 }
            #expect(try await bob.threadTitles().first == "bob 21")
            try await bob.click("#more-threads")
            try await eventually("the second page") { try await bob.threadTitles().count == 21 }
            #expect(Set(try await bob.threadTitles()).count == 21)
            #expect(try await bob.run("return document.querySelector('#more-threads').hidden") as? Bool == true)
            await alice.quit()
            await bob.quit()
        }
    }

    /// Each message as sent, then the demo agent's stored reply.
    static func conversation(_ sent: [String]) -> [(role: String, status: String, text: String)] {
        sent.flatMap { [("user", "complete", $0), ("assistant", "complete", "echo: \($0)")] }
    }

    /// A token signed with the development secret, from the real CLI.
    static func developmentToken(user: String) async throws -> String {
        let process = try ChildProcess.start(builtProduct("herald"), ["token", "--user", user, "--insecure-dev"])
        #expect(try await process.waitForExit(timeout: .seconds(20)) == 0, "herald token: \(process.log())")
        return process.log().trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The screenshot in docs/frontend.md, when `HERALD_SCREENSHOT` names where to write it; always checked to be a PNG.
    func saveScreenshot(of browser: Browser) async throws {
        let png = try await browser.screenshotPNG()
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "not a PNG")
        if let path = ProcessInfo.processInfo.environment["HERALD_SCREENSHOT"], !path.isEmpty {
            try png.write(to: URL(fileURLWithPath: path))
        }
    }
}

extension Browser {
    func signIn(as user: String, at base: String) async throws {
        try await open(base + "/")
        try await type(user, into: "#user-name")
        try await click("#dev-sign-in button[type=submit]")
        try await eventually("signed in as \(user)") { try await text("#who") == user }
    }

    /// Creates a thread through the page and returns its id (the page shows it in the address).
    func createThread(_ title: String) async throws -> String {
        try await type(title, into: "#new-thread-title")
        try await click("#new-thread button[type=submit]")
        var id = ""
        try await eventually("the new thread open") {
            id = try await run("return location.hash.slice(1)") as? String ?? ""
            return !id.isEmpty
        }
        return id
    }

    func send(_ content: String) async throws {
        try await type(content, into: "#message-input")
        try await click("#send")
    }

    func waitForConnection(_ state: String, timeout: Duration = .seconds(10)) async throws {
        try await eventually(timeout: timeout, "connection \(state)") {
            try await run("return document.querySelector('#connection').dataset.state") as? String == state
        }
    }

    func waitForMessages(_ expected: [(role: String, status: String, text: String)], _ what: String, timeout: Duration = .seconds(10)) async throws {
        let wanted = expected.map { ShownMessage(role: $0.role, status: $0.status, text: $0.text, error: "") }
        var shown: [ShownMessage] = []
        do {
            try await eventually(timeout: timeout, what) {
                shown = try await messages()
                return shown == wanted
            }
        } catch {
            Issue.record("shown: \(shown)\nwanted: \(wanted)")
            throw error
        }
    }

    func threadTitles() async throws -> [String] {
        try await run("return [...document.querySelectorAll('#thread-list li')].map(li => li.textContent)") as? [String] ?? []
    }

    /// The token the page signed in with.
    func token() async throws -> String {
        try await run("return sessionStorage.getItem('herald.token')") as? String ?? ""
    }

    /// From now on, every change the page makes to the newest reply is recorded (status and text), however
    /// briefly it was shown.
    func recordReplyUpdates() async throws {
        _ = try await run(
            """
            window.replyUpdates = [];
            new MutationObserver(() => {
              const reply = [...document.querySelectorAll('#messages > li[data-role=assistant]')].at(-1);
              if (!reply) return;
              const update = [reply.dataset.status, reply.querySelector('.content').textContent];
              const last = window.replyUpdates.at(-1);
              if (!last || last[0] !== update[0] || last[1] !== update[1]) window.replyUpdates.push(update);
            }).observe(document.querySelector('#messages'), { subtree: true, childList: true, characterData: true, attributes: true });
            """
        )
    }

    func replyUpdates() async throws -> [(status: String, text: String)] {
        (try await run("return window.replyUpdates") as? [[String]] ?? []).map { ($0[0], $0[1]) }
    }
}
