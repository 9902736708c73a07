import Testing

@testable import HeraldCore

@Suite("configuration: connection limits")
struct ConnectionLimitsTests {
    @Test("defaults: 10 s head, 30 s body, 60 s idle, a cap under the descriptor limit")
    func defaults() throws {
        let limits = try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1"]).connectionLimits
        #expect(limits.headerTimeoutSeconds == 10)
        #expect(limits.bodyTimeoutSeconds == 30)
        #expect(limits.idleTimeoutSeconds == 60)
        #expect(limits.operationsPort == nil)
        let descriptors = ConnectionLimits.currentFileDescriptorLimit()
        #expect(limits.maxConnections == ConnectionLimits.defaultMaxConnections(
            fileDescriptorLimit: descriptors, databasePoolSize: 8, agentStreamMaxJoins: 256
        ))
    }

    @Test("the default cap leaves the node's own descriptors and 10 % head-room")
    func defaultCap() {
        // 20 000 descriptors: 18 000, less 8 + 256 + 128 of the node's own and the operators' 8.
        #expect(ConnectionLimits.defaultMaxConnections(fileDescriptorLimit: 20_000, databasePoolSize: 8, agentStreamMaxJoins: 256) == 17_600)
        #expect(ConnectionLimits.defaultMaxConnections(fileDescriptorLimit: 256, databasePoolSize: 8, agentStreamMaxJoins: 256) == 16)
    }

    @Test("each variable is read")
    func overrides() throws {
        let limits = try HeraldConfiguration.fromEnvironment([
            "HERALD_INSECURE_DEV": "1", "HERALD_HEADER_TIMEOUT_SECONDS": "2.5", "HERALD_BODY_TIMEOUT_SECONDS": "7",
            "HERALD_IDLE_TIMEOUT_SECONDS": "90", "HERALD_MAX_CONNECTIONS": "500", "HERALD_OPERATIONS_PORT": "9090",
        ]).connectionLimits
        #expect(limits == ConnectionLimits(
            headerTimeoutSeconds: 2.5, bodyTimeoutSeconds: 7, idleTimeoutSeconds: 90, maxConnections: 500, operationsPort: 9090
        ))
    }

    @Test("a bad value names its variable", arguments: [
        ("HERALD_HEADER_TIMEOUT_SECONDS", "0"), ("HERALD_BODY_TIMEOUT_SECONDS", "soon"), ("HERALD_IDLE_TIMEOUT_SECONDS", "-1"),
        ("HERALD_MAX_CONNECTIONS", "0"), ("HERALD_MAX_CONNECTIONS", "many"), ("HERALD_OPERATIONS_PORT", "70000"),
    ])
    func badValues(variable: String, value: String) {
        let error = #expect(throws: ConfigurationError.self) {
            try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1", variable: value])
        }
        #expect(error?.variable == variable)
    }
}
