import CurlClient
import Foundation
import HeraldTestSupport
import Logging
import Testing

/// HTTPS to a server whose certificate a private CA signed (`openssl s_server`, a TLS implementation of its own).
@Suite("curl client: a private CA")
struct CurlTLSTests {
    @Test("trusted through caFile, the server is reached; with the system's store alone its certificate is refused")
    func privateCA() async throws {
        let certificates = try TestCertificates.make()
        let port = freeTCPPort()
        let server = try ChildProcess.start("/usr/bin/openssl", [
            "s_server", "-quiet", "-www", "-accept", String(port), "-cert", certificates.serverCertificate, "-key", certificates.serverKey,
        ])
        defer { server.terminate() }
        let request = CurlRequest(method: "GET", url: "https://localhost:\(port)/", timeout: .seconds(5))

        let trusting = try CurlHTTPClient(logger: Logger(label: "test"), caFile: certificates.authority)
        defer { trusting.shutdown() }
        var response: CurlResponse?
        let deadline = ContinuousClock.now + .seconds(30)
        while response == nil, ContinuousClock.now < deadline {
            response = try? await trusting.execute(request)
            if response == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(response?.status == 200)

        let system = try CurlHTTPClient(logger: Logger(label: "test"))
        defer { system.shutdown() }
        let error = await #expect(throws: CurlError.self) { try await system.execute(request) }
        #expect(error?.message.lowercased().contains("certificate") == true, "\(String(describing: error))")
    }
}
