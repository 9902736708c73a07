import Foundation
import HeraldTestSupport
import Testing

/// PostgreSQL over TLS with libpq's strictest checks (`sslmode=verify-full`), against a server with `ssl=on`.
@Suite("PostgreSQL over TLS", .timeLimit(.minutes(3)))
struct PostgresTLSTests {
    @Test("sslmode=verify-full with sslrootcert: the whole loop works; a wrong root certificate is a one-line start-up error")
    func verifyFull() async throws {
        let certificates = try TestCertificates.make()
        let otherCA = try TestCertificates.make()
        let postgres = try await PostgresServer.start(tls: certificates)
        try await withStack(postgres: postgres, postgresCA: certificates.authority) { stack in
            #expect(stack.nodes[0].environment["DATABASE_URL"]?.contains("sslmode=verify-full") == true)
            let api = stack.api()
            let thread = try await api.createThread()
            let stream = try await api.openStream(thread)
            try await stream.waitForComment(containing: "connected")
            _ = try await api.send(thread, "over TLS to PostgreSQL")
            try await eventually("the run completes") { stream.events.contains { $0.object["status"] as? String == "completed" } }
            await stream.connection.closeGracefully()

            var environment = stack.nodes[0].environment
            let port = freeTCPPort()
            environment["HERALD_PORT"] = String(port)
            environment["DATABASE_URL"] = environment["DATABASE_URL"]?.replacingOccurrences(of: certificates.authority, with: otherCA.authority)
            let refused = try ChildProcess.start(builtProduct("herald"), ["serve"], environment: environment)
            let status = try await refused.waitForExit(timeout: .seconds(30))
            #expect(status == 2)
            let lines = refused.log().split(separator: "\n").filter { $0.contains("DATABASE_URL") }
            #expect(lines.count == 1, "\(refused.log())")
            #expect(lines.first?.lowercased().contains("certificate") == true, "\(refused.log())")
        }
        try await postgres.stop()
    }
}
