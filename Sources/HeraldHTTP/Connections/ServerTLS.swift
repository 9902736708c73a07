import HeraldCore
import Logging
import NIOConcurrencyHelpers
import NIOSSL
import ServiceLifecycle
import UnixSignals

/// The client listener's TLS: the certificate chain and key read from their files at start-up, and again on
/// SIGHUP (a renewed certificate without a restart). Each connection takes the context that is current when it is
/// accepted, so connections already open, streams among them, keep theirs. ALPN offers HTTP/2 and HTTP/1.1.
final class ServerTLS: Sendable {
    struct LoadError: Error, CustomStringConvertible {
        let files: ServerTLSFiles
        let underlying: any Error
        var description: String {
            "HERALD_TLS_CERT_FILE/HERALD_TLS_KEY_FILE: cannot use \(files.certificateFile) and \(files.keyFile): \(underlying)"
        }
    }

    let files: ServerTLSFiles
    private let current: NIOLockedValueBox<NIOSSLContext>

    init(files: ServerTLSFiles) throws {
        self.files = files
        self.current = NIOLockedValueBox(try Self.context(files))
    }

    /// A handler for a new connection, with the current certificate.
    func handler() -> NIOSSLServerHandler {
        NIOSSLServerHandler(context: current.withLockedValue { $0 })
    }

    /// Reads the files again; a certificate that does not load leaves the current one in place.
    func reload(logger: Logger) {
        do {
            let context = try Self.context(files)
            current.withLockedValue { $0 = context }
            logger.info("TLS certificate reloaded", metadata: ["file": "\(files.certificateFile)"])
        } catch {
            logger.error("TLS certificate NOT reloaded; the previous one stays", metadata: ["error": "\(error)"])
        }
    }

    private static func context(_ files: ServerTLSFiles) throws -> NIOSSLContext {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(files.certificateFile).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: files.keyFile, format: .pem)
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            configuration.applicationProtocols = ["h2", "http/1.1"]
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw LoadError(files: files, underlying: error)
        }
    }
}

/// Reloads the listener's certificate on every SIGHUP until the node shuts down.
struct ServerTLSReload: Service {
    let tls: ServerTLS
    let logger: Logger

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            tls.reload(logger: logger)
        }
    }
}
