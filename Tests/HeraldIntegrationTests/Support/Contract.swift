import Foundation
import HeraldTestSupport
import Synchronization
import Testing

/// Real traffic recorded for the OpenAPI contract check: responses with the route pattern they answered, request
/// bodies, and stream frames. `check(document:)` hands them to Tests/OpenAPI/check.py (openapi-spec-validator and
/// jsonschema, independent of Herald) with the document the node served.
final class ContractRecorder: Sendable {
    /// Each sample already serialized: JSON text is all that crosses tasks.
    private let samples = Mutex<[Data]>([])

    /// `response` to `method path`, where `path` is the route pattern as the document spells it.
    func response(_ method: String, _ path: String, _ response: TestHTTPResponse) {
        var sample: [String: Any] = [
            "kind": "response", "method": method, "path": path, "status": response.status,
            "content_type": response.header("Content-Type") ?? "",
        ]
        if !response.body.isEmpty, (response.header("Content-Type") ?? "").hasPrefix("application/json") {
            sample["body"] = (try? JSONSerialization.jsonObject(with: Data(response.body), options: [.fragmentsAllowed])) ?? response.text
        }
        record(sample)
    }

    func request(_ method: String, _ path: String, body: [UInt8]) {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body)) else { return }
        record(["kind": "request", "method": method, "path": path, "body": json])
    }

    /// Every event of `stream` so far, as an EventSource sees it. An event had an `id:` line when it changed the
    /// last event id (ids only grow); heartbeats and some resyncs have none.
    func frames(of stream: SSEStream, path: String = "/chats/sse/{thread_id}") {
        var lastEventID = ""
        for event in stream.events {
            defer { lastEventID = event.lastEventID }
            var frame: [String: Any] = [
                "event": event.type,
                "data": (try? JSONSerialization.jsonObject(with: Data(event.data.utf8), options: [.fragmentsAllowed])) ?? event.data,
            ]
            if event.lastEventID != lastEventID { frame["id"] = event.lastEventID }
            record(["kind": "frame", "method": "GET", "path": path, "frame": frame])
        }
    }

    /// A WebSocket message on `/ws`, sent by the client or the server.
    func webSocketMessage(_ message: [String: Any], from direction: String) {
        record(["kind": "ws_message", "method": "GET", "path": "/ws", "direction": direction, "message": message])
    }

    private func record(_ sample: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: sample, options: [.sortedKeys]) else {
            Issue.record("not JSON-serializable: \(sample)")
            return
        }
        samples.withLock { $0.append(data) }
    }

    /// Runs the independent validator over `document` and everything recorded; its report on failure.
    func check(document: [UInt8]) async throws {
        let directory = NSTemporaryDirectory() + "herald-contract-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let documentPath = directory + "/openapi.json", samplesPath = directory + "/samples.json"
        try Data(document).write(to: URL(fileURLWithPath: documentPath))
        let array = samples.withLock { Data("[".utf8) + $0.joined(separator: Data(",".utf8)) + Data("]".utf8) }
        try array.write(to: URL(fileURLWithPath: samplesPath))

        let venv = try await OpenAPIValidator.venv()
        let checker = try ChildProcess.start("\(venv)/bin/python", ["\(packageRoot())/Tests/OpenAPI/check.py", documentPath, samplesPath])
        let status = try await checker.waitForExit(timeout: .seconds(120))
        #expect(status == 0, "Tests/OpenAPI/check.py:\n\(checker.log())")
    }
}

/// The cached virtualenv of scripts/openapi-venv.sh (`make test` prepares it while the package builds).
enum OpenAPIValidator {
    static func venv() async throws -> String {
        let script = try ChildProcess.start("/bin/bash", ["\(packageRoot())/scripts/openapi-venv.sh"])
        let status = try await script.waitForExit(timeout: .seconds(600))
        guard status == 0, let venv = script.log().split(separator: "\n").last.map(String.init) else {
            throw ChildProcessError("scripts/openapi-venv.sh failed: \(script.log())")
        }
        return venv
    }
}

/// The package's root directory, found from this source file's path.
func packageRoot(file: String = #filePath) -> String {
    var url = URL(fileURLWithPath: file)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}
