import Foundation
import HeraldTestSupport
import Testing

/// PostgreSQL is slow to initialise, so one server serves the whole test process; each stack gets its own
/// database. Redis is quick: each stack gets its own server, so tests can count its clients or restart it.
actor SharedPostgres {
    static let shared = SharedPostgres()
    /// One start for everyone: suites ask concurrently, and the actor is reentrant across the `await`.
    private var starting: Task<PostgresServer, any Error>?

    func server() async throws -> PostgresServer {
        if let starting { return try await starting.value }
        let task = Task { try await PostgresServer.start() }
        starting = task
        return try await task.value
    }
}

/// A running Herald deployment for one test: Redis, a database, the demo agent and one or more Herald nodes,
/// all real processes on loopback.
final class Stack: Sendable {
    let redis: RedisServer
    let databaseURL: String
    let agent: ChildProcess?
    let agentURL: String
    let nodes: [Node]
    /// User tokens minted by `herald token`, by user.
    let tokens: [String: String]
    /// With `proxiedDatabase`: the nodes reach PostgreSQL through it, which the test can hold.
    let databaseProxy: TCPProxy?

    /// The secrets every stack runs with: user tokens are HS256 with the first, webhooks signed with the second.
    static let jwtSecret = "integration-tests-jwt-secret-0123456789abcdef"
    static let webhookSecret = "whsec_aW50ZWdyYXRpb24tdGVzdHMtd2ViaG9vay1zZWNyZXQ="
    static let users = ["alice", "bob"]

    struct Node: Sendable {
        let process: ChildProcess
        let port: Int
        /// What it was started with, so a test can start it again after stopping it.
        let environment: [String: String]
        /// With the listener on TLS: https, and the name its certificate is for.
        var url: String { environment["HERALD_TLS_CERT_FILE"] == nil ? "http://127.0.0.1:\(port)" : "https://localhost:\(port)" }
    }

    var node: Node { nodes[0] }
    var url: String { nodes[0].url }

    enum Agent: Equatable {
        /// `herald demo-agent` on a free port, signing its callbacks.
        case demo
        /// The demo agent without a webhook secret: it relies on the callback URL's token, like LangGraph.
        case demoUnsigned
        /// A port nothing listens on: every trigger fails to connect.
        case unreachable
        /// An engine the test started itself, at this URL.
        case external(String)
    }

    static func start(
        nodes count: Int = 1, agent: Agent = .demo, environment: [String: String] = [:], redisPersistence: Bool = false,
        postgres: PostgresServer? = nil, tokenDelayMs: Int = 10, redisTLS: TestCertificates? = nil,
        postgresCA: String? = nil, serverTLS: TestCertificates? = nil, proxiedDatabase: Bool = false
    ) async throws -> Stack {
        let herald = builtProduct("herald")
        let redis = try await RedisServer.start(persistence: redisPersistence, tls: redisTLS)
        let server = if let postgres { postgres } else { try await SharedPostgres.shared.server() }
        let databaseURL = try await server.createDatabase()
        let databaseProxy = proxiedDatabase ? try await TCPProxy.start(forwardingTo: server.port) : nil

        let migrate = try ChildProcess.start(herald, ["migrate"], environment: ["DATABASE_URL": databaseURL])
        let status = try await migrate.waitForExit(timeout: .seconds(30))
        #expect(status == 0, "herald migrate failed: \(migrate.log())")

        var agentProcess: ChildProcess?
        let agentPort = freeTCPPort()
        var agentURL = "http://127.0.0.1:\(agentPort)"
        switch agent {
        case .external(let url):
            agentURL = url
        case .unreachable:
            break
        case .demo, .demoUnsigned:
            var agentEnvironment = agent == .demo ? ["HERALD_WEBHOOK_SECRET": webhookSecret] : [:]
            if let serverTLS { agentEnvironment["HERALD_OUTBOUND_CA_FILE"] = serverTLS.authority }
            let process = try ChildProcess.start(
                herald, ["demo-agent", "--port", String(agentPort), "--delay-ms", "100", "--token-delay-ms", String(tokenDelayMs)],
                environment: agentEnvironment
            )
            try await waitUntilHealthy("\(agentURL)/healthz", process: process)
            agentProcess = process
        }

        var nodes: [Node] = []
        for _ in 0..<count {
            let port = freeTCPPort()
            var env = [
                "REDIS_URL": redis.url,
                "DATABASE_URL": databaseURL,
                "AGENT_URL": agentURL,
                "AGENT_KIND": "langgraph",
                "PUBLIC_URL": "http://127.0.0.1:\(port)",
                "HERALD_HOST": "127.0.0.1",
                "HERALD_PORT": String(port),
                "HERALD_LOG_LEVEL": "debug",
                "HERALD_JWT_SECRET": jwtSecret,
                "HERALD_WEBHOOK_SECRET": webhookSecret,
                // No clock-skew allowance, so a token minted for 1 s is refused a moment later.
                "HERALD_JWT_LEEWAY_SECONDS": "0",
            ]
            if let redisTLS { env["REDIS_TLS_CA_FILE"] = redisTLS.authority }
            if let serverTLS {
                // The engine calls back over HTTPS, to the name the certificate is for.
                env["PUBLIC_URL"] = "https://localhost:\(port)"
                env["HERALD_TLS_CERT_FILE"] = serverTLS.serverCertificate
                env["HERALD_TLS_KEY_FILE"] = serverTLS.serverKey
                // Readiness is asked on the plain operations listener.
                env["HERALD_OPERATIONS_PORT"] = String(freeTCPPort())
            }
            if let postgresCA {
                // The name the server certificate is for, and libpq's strictest checks.
                env["DATABASE_URL"] = databaseURL.replacingOccurrences(of: "@127.0.0.1:", with: "@localhost:")
                    + "?sslmode=verify-full&sslrootcert=\(postgresCA)"
            }
            if let databaseProxy {
                env["DATABASE_URL"] = databaseURL.replacingOccurrences(of: ":\(server.port)/", with: ":\(databaseProxy.port)/")
            }
            env.merge(environment) { _, override in override }
            nodes.append(try await startNode(port: port, environment: env))
        }
        var tokens: [String: String] = [:]
        for user in users {
            tokens[user] = try await mintToken(user: user)
        }
        return Stack(
            redis: redis, databaseURL: databaseURL, agent: agentProcess, agentURL: agentURL, nodes: nodes, tokens: tokens,
            databaseProxy: databaseProxy
        )
    }

    /// `herald serve` on `port`, once it is ready.
    private static func startNode(port: Int, environment: [String: String]) async throws -> Node {
        let process = try ChildProcess.start(builtProduct("herald"), ["serve"], environment: environment)
        let health = environment["HERALD_TLS_CERT_FILE"] == nil ? port : Int(environment["HERALD_OPERATIONS_PORT"] ?? "") ?? port
        try await waitUntilHealthy("http://127.0.0.1:\(health)/readyz", process: process)
        return Node(process: process, port: port, environment: environment)
    }

    /// Node `index` started again, on its port with its settings, after the test stopped it (a restart). The
    /// caller stops the returned node.
    func restartedNode(_ index: Int) async throws -> Node {
        try await Self.startNode(port: nodes[index].port, environment: nodes[index].environment)
    }

    /// A token from the real CLI, as a developer or script would get one.
    static func mintToken(user: String, ttl: String = "1h", secret: String = jwtSecret) async throws -> String {
        let process = try ChildProcess.start(
            builtProduct("herald"), ["token", "--user", user, "--ttl", ttl], environment: ["HERALD_JWT_SECRET": secret]
        )
        let status = try await process.waitForExit(timeout: .seconds(20))
        #expect(status == 0, "herald token: \(process.log())")
        return process.log().trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private init(
        redis: RedisServer, databaseURL: String, agent: ChildProcess?, agentURL: String, nodes: [Node], tokens: [String: String],
        databaseProxy: TCPProxy?
    ) {
        self.redis = redis
        self.databaseURL = databaseURL
        self.agent = agent
        self.agentURL = agentURL
        self.nodes = nodes
        self.tokens = tokens
        self.databaseProxy = databaseProxy
    }

    /// The API of node `node`, acting as `user`.
    func api(node: Int = 0, user: String = "alice") -> API {
        API(nodes[node].url, token: tokens[user])
    }

    func stop() async {
        for node in nodes { node.process.terminate() }
        agent?.terminate()
        try? await redis.stop()
        try? await databaseProxy?.stop()
    }

    /// Logs of every process, for failure messages: each node's warnings and errors from the whole run (a tail can be
    /// all request lines), then its tail.
    func logs() -> String {
        nodes.enumerated().map { index, node in
            let log = node.process.log()
            let warnings = log.split(separator: "\n").filter { line in
                [" warning ", " error ", " critical "].contains { line.contains($0) }
            }
            return "--- node \(index): warnings and errors ---\n\(warnings.suffix(40).joined(separator: "\n"))\n"
                + "--- node \(index): last lines ---\n\(log.suffix(4000))"
        }.joined(separator: "\n")
            + "\n--- agent ---\n" + (agent?.log().suffix(2000) ?? "none")
    }
}

/// Runs `body` with a started stack and always stops it.
func withStack<T>(
    nodes: Int = 1, agent: Stack.Agent = .demo, environment: [String: String] = [:], redisPersistence: Bool = false,
    postgres: PostgresServer? = nil, tokenDelayMs: Int = 10, redisTLS: TestCertificates? = nil, postgresCA: String? = nil,
    serverTLS: TestCertificates? = nil, proxiedDatabase: Bool = false, _ body: (Stack) async throws -> T
) async throws -> T {
    let stack = try await Stack.start(
        nodes: nodes, agent: agent, environment: environment, redisPersistence: redisPersistence, postgres: postgres,
        tokenDelayMs: tokenDelayMs, redisTLS: redisTLS, postgresCA: postgresCA, serverTLS: serverTLS,
        proxiedDatabase: proxiedDatabase
    )
    do {
        let result = try await body(stack)
        await stack.stop()
        return result
    } catch {
        let logs = stack.logs()
        await stack.stop()
        Issue.record("stack logs:\n\(logs)")
        throw error
    }
}
