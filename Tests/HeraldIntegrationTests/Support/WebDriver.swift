import Foundation
import HeraldTestSupport
import Testing

/// A failed WebDriver command, with chromedriver's error code and message.
struct WebDriverError: Error, CustomStringConvertible {
    let description: String
}

/// chromedriver from Debian's `chromium-driver`, spoken to over its W3C WebDriver HTTP API, driving headless
/// Chromium. Missing browser packages fail the test (CI installs them through scripts/install-deps.sh).
final class ChromeDriver: Sendable {
    let process: ChildProcess
    let url: String

    static let driverPath = "/usr/bin/chromedriver"
    static let browserPath = "/usr/bin/chromium"

    static func start() async throws -> ChromeDriver {
        for path in [driverPath, browserPath] where !FileManager.default.isExecutableFile(atPath: path) {
            throw WebDriverError(description: "\(path) is missing: run scripts/install-deps.sh (Debian packages chromium, chromium-driver)")
        }
        let port = freeTCPPort()
        let process = try ChildProcess.start(driverPath, ["--port=\(port)"])
        let url = "http://127.0.0.1:\(port)"
        try await waitUntilHealthy("\(url)/status", process: process)
        return ChromeDriver(process: process, url: url)
    }

    private init(process: ChildProcess, url: String) {
        self.process = process
        self.url = url
    }

    /// A new browser with its own profile (cookies, storage): another person at another computer.
    func newBrowser() async throws -> Browser {
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("herald-chromium-\(UUID().uuidString)").path
        let chromeOptions: [String: Any] = [
            "binary": Self.browserPath,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--user-data-dir=\(profile)",
                "--window-size=1100,720", "--no-first-run", "--disable-extensions",
            ],
        ]
        let alwaysMatch: [String: Any] = [
            "browserName": "chrome",
            "goog:chromeOptions": chromeOptions,
            // The delete button asks with confirm(): tests answer dialogs themselves.
            "unhandledPromptBehavior": "ignore",
        ]
        let capabilities: [String: Any] = ["capabilities": ["alwaysMatch": alwaysMatch]]
        let value = try await WebDriverCall.send(url, "POST", "/session", capabilities, timeout: .seconds(60))
        guard let sessionID = (value as? [String: Any])?["sessionId"] as? String else {
            throw WebDriverError(description: "no sessionId in \(value)")
        }
        return Browser(driver: url, sessionID: sessionID, profile: profile)
    }

    func stop() {
        process.terminate()
    }
}

/// One headless Chromium session.
struct Browser: Sendable {
    let driver: String
    let sessionID: String
    let profile: String

    /// The W3C element reference key.
    private static let elementKey = "element-6066-11e4-a52e-4f735466cecf"

    @discardableResult
    private func call(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> Any {
        try await WebDriverCall.send(driver, method, "/session/\(sessionID)\(path)", body ?? [:], timeout: .seconds(30))
    }

    func open(_ url: String) async throws {
        try await call("POST", "/url", ["url": url])
    }

    func reload() async throws {
        try await call("POST", "/refresh")
    }

    func element(_ selector: String) async throws -> String {
        let value = try await call("POST", "/element", ["using": "css selector", "value": selector])
        guard let id = (value as? [String: Any])?[Self.elementKey] as? String else {
            throw WebDriverError(description: "no element for \(selector): \(value)")
        }
        return id
    }

    func click(_ selector: String) async throws {
        try await call("POST", "/element/\(try await element(selector))/click")
    }

    /// Types `text` into the field, as keystrokes.
    func type(_ text: String, into selector: String) async throws {
        let id = try await element(selector)
        try await call("POST", "/element/\(id)/clear")
        try await call("POST", "/element/\(id)/value", ["text": text])
    }

    /// Runs `script` (a function body; `arguments[0]`… are `arguments`) in the page and returns its result.
    func run(_ script: String, _ arguments: [Any] = []) async throws -> Any {
        try await call("POST", "/execute/sync", ["script": script, "args": arguments])
    }

    func text(_ selector: String) async throws -> String {
        try await run("return document.querySelector(arguments[0])?.textContent ?? null", [selector]) as? String ?? ""
    }

    /// The conversation as shown: role, status and text of each message, top to bottom.
    func messages() async throws -> [ShownMessage] {
        let value = try await run(
            """
            return [...document.querySelectorAll('#messages > li')].map(li => [
              li.dataset.role, li.dataset.status, li.querySelector('.content').textContent,
              li.querySelector('.error').textContent])
            """
        )
        return (value as? [[String]] ?? []).map { ShownMessage(role: $0[0], status: $0[1], text: $0[2], error: $0[3]) }
    }

    /// The text of an open `alert`/`confirm` dialog, or nil when none is open.
    func dialogText() async throws -> String? {
        do {
            return try await call("GET", "/alert/text") as? String
        } catch let error as WebDriverError where error.description.hasPrefix("no such alert") {
            return nil
        }
    }

    func acceptDialog() async throws {
        try await call("POST", "/alert/accept")
    }

    /// Chromium's network emulation: offline fails every request and tells the page (`navigator.onLine`).
    func setOffline(_ offline: Bool) async throws {
        let conditions: [String: Any] = ["offline": offline, "latency": 0, "download_throughput": -1, "upload_throughput": -1]
        try await call("POST", "/chromium/network_conditions", ["network_conditions": conditions])
    }

    func screenshotPNG() async throws -> Data {
        guard let base64 = try await call("GET", "/screenshot") as? String, let png = Data(base64Encoded: base64) else {
            throw WebDriverError(description: "screenshot: no base64 PNG")
        }
        return png
    }

    func quit() async {
        _ = try? await call("DELETE", "")
        try? FileManager.default.removeItem(atPath: profile)
    }
}

struct ShownMessage: Equatable, CustomStringConvertible {
    let role: String
    let status: String
    let text: String
    let error: String
    var description: String { "\(role)[\(status)]: \(text)\(error.isEmpty ? "" : " (\(error))")" }
}

/// One WebDriver command: JSON in, the answer's `value` out, a WebDriver error as `WebDriverError`.
private enum WebDriverCall {
    static func send(_ base: String, _ method: String, _ path: String, _ body: [String: Any], timeout: Duration) async throws -> Any {
        let bytes = method == "GET" || method == "DELETE" ? nil : Array(try JSONSerialization.data(withJSONObject: body))
        let headers = bytes == nil ? [] : [("Content-Type", "application/json")]
        let response = try await TestHTTPClient.request(method, base + path, headers: headers, body: bytes, timeout: timeout)
        let object = try JSONSerialization.jsonObject(with: Data(response.body), options: [.fragmentsAllowed]) as? [String: Any]
        let value = object?["value"] ?? NSNull()
        guard response.status == 200 else {
            let detail = value as? [String: Any]
            throw WebDriverError(
                description: "\(detail?["error"] as? String ?? "status \(response.status)"): \(method) \(path): "
                    + "\(String(describing: detail?["message"] ?? response.text).prefix(500))"
            )
        }
        return value
    }
}
