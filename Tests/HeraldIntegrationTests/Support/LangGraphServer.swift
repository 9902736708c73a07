import Foundation
import HeraldTestSupport
import Testing

/// A real LangGraph server (`langgraph dev`, in-memory runtime) serving Tests/Engines/langgraph: a chat graph
/// whose fake model streams its answer token by token, behind API-key authentication like a Platform deployment.
/// One server for the whole test process: it takes seconds to start. The virtualenv comes from
/// scripts/langgraph-venv.sh (cached; `make test` prepares it while the package builds).
actor LangGraphServer {
    static let shared = LangGraphServer()
    static let apiKey = "test-engine-key-7f1c2a"
    /// The graph's id, which LangGraph also accepts as the assistant id.
    static let assistantID = "chat"

    private var starting: Task<(ChildProcess, String), any Error>?

    /// The server's base URL, starting it first if needed.
    func url() async throws -> String {
        if let starting { return try await starting.value.1 }
        let task = Task { try await Self.start() }
        starting = task
        return try await task.value.1
    }

    private static func start() async throws -> (ChildProcess, String) {
        let root = packageRoot()
        let venvScript = try ChildProcess.start("/bin/bash", ["\(root)/scripts/langgraph-venv.sh"])
        // A cached virtualenv answers at once; a first install from PyPI takes minutes.
        let status = try await venvScript.waitForExit(timeout: .seconds(600))
        guard status == 0, let venv = venvScript.log().split(separator: "\n").last.map(String.init) else {
            throw ChildProcessError("scripts/langgraph-venv.sh failed: \(venvScript.log())")
        }
        // `langgraph dev` resolves the config's paths from, and keeps its state in, its working directory: it runs
        // in a fresh copy of the engine's folder.
        let workDirectory = NSTemporaryDirectory() + "herald-langgraph-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.copyItem(atPath: "\(root)/Tests/Engines/langgraph", toPath: workDirectory)
        let port = freeTCPPort()
        let server = try ChildProcess.start(
            "\(venv)/bin/langgraph",
            [
                "dev", "--host", "127.0.0.1", "--port", String(port), "--no-browser", "--no-reload",
                "--config", "langgraph.json",
            ],
            environment: [
                "TEST_ENGINE_API_KEY": apiKey, "LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false",
                "LANGGRAPH_CLI_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1",
            ],
            directory: workDirectory
        )
        let url = "http://127.0.0.1:\(port)"
        try await waitUntilHealthy("\(url)/ok", timeout: .seconds(90), process: server)
        return (server, url)
    }
}
