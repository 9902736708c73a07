import Foundation

/// A private CA and a server certificate it signed, made with the `openssl` command in a temporary directory,
/// for servers that speak TLS in tests. The server certificate covers `localhost` and 127.0.0.1 by default.
public struct TestCertificates: Sendable {
    public let directory: URL
    /// PEM paths.
    public let authority: String
    public let serverCertificate: String
    public let serverKey: String

    /// A new CA and server certificate; `serverNames` are the DNS names the certificate covers, and with
    /// `loopbackAddress` 127.0.0.1 too (a client checks a certificate against the name it asked for or the address it
    /// connected to: without it, a name mismatch is a mismatch).
    public static func make(serverNames: [String] = ["localhost"], loopbackAddress: Bool = true) throws -> TestCertificates {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("herald-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = { (name: String) in directory.appendingPathComponent(name).path }
        let names = (serverNames.map { "DNS:\($0)" } + (loopbackAddress ? ["IP:127.0.0.1"] : [])).joined(separator: ",")
        try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Herald test CA",
                     "-keyout", path("ca.key"), "-out", path("ca.pem")])
        try openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(serverNames.first ?? "server")",
                     "-keyout", path("server.key"), "-out", path("server.csr")])
        try "subjectAltName=\(names)\n".write(toFile: path("san.ext"), atomically: true, encoding: .utf8)
        try openssl(["x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                     "-CAcreateserial", "-days", "2", "-extfile", path("san.ext"), "-out", path("server.pem")])
        return TestCertificates(
            directory: directory, authority: path("ca.pem"), serverCertificate: path("server.pem"), serverKey: path("server.key")
        )
    }

    private static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try ChildRegistry.spawnLocked { try process.run() }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestCertificatesError(arguments: arguments, status: process.terminationStatus)
        }
    }
}

public struct TestCertificatesError: Error, CustomStringConvertible {
    let arguments: [String]
    let status: Int32
    public var description: String { "openssl \(arguments.joined(separator: " ")) exited with \(status)" }
}
