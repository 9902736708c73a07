import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum RedisServerError: Error, CustomStringConvertible {
    case executableNotFound(String)
    case didNotStart(port: Int, log: String)

    public var description: String {
        switch self {
        case .executableNotFound(let name): "\(name) not found in PATH"
        case .didNotStart(let port, let log): "redis-server on port \(port) did not start. Log:\n\(log)"
        }
    }
}

/// A real `redis-server` for tests: on a free port, with its own temporary directory, no RDB snapshots.
///
/// `@unchecked Sendable`: the only mutable state (`running`) is read and written with `lock` held; the rest is
/// immutable.
public final class RedisServer: @unchecked Sendable {
    public let port: Int
    /// The server's working directory (its log and, with persistence, its AOF files).
    public let directory: URL
    public let persistence: Bool
    /// With TLS, the server speaks only TLS, on `port`, with these files.
    public let tls: TestCertificates?

    /// "redis://127.0.0.1:PORT", or "rediss://localhost:PORT" with TLS (the name its certificate is for).
    public var url: String { tls == nil ? "redis://127.0.0.1:\(self.port)" : "rediss://localhost:\(self.port)" }

    private struct Running {
        var process: Process
        var exit: EventLoopFuture<Int32>
    }

    private let lock = NSLock()
    private var running: Running?

    private init(port: Int, directory: URL, persistence: Bool, tls: TestCertificates?) {
        self.port = port
        self.directory = directory
        self.persistence = persistence
        self.tls = tls
    }

    deinit {
        self.terminate()
        try? FileManager.default.removeItem(at: self.directory)
    }

    /// Starts a server and waits until it answers PING. With `persistence`, it writes an append-only file with
    /// `appendfsync always` in its directory, so `restart()` keeps the data.
    public static func start(persistence: Bool = false, tls: TestCertificates? = nil) async throws -> RedisServer {
        var lastError: (any Error)?
        // A port from freeTCPPort() can be taken by someone else before redis-server binds it: retry a few times.
        for _ in 0..<5 {
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("herald-redis-\(UUID().uuidString)", isDirectory: true)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let server = RedisServer(port: freeTCPPort(), directory: directory, persistence: persistence, tls: tls)
            do {
                try await server.launch()
                return server
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after 10 s).
    public func stop() async throws {
        guard let running = self.lock.withLock({ () -> Running? in
            defer { self.running = nil }
            return self.running
        }) else { return }
        if running.process.isRunning {
            running.process.terminate()
        }
        let pid = running.process.processIdentifier
        let killer = running.exit.eventLoop.scheduleTask(in: .seconds(10)) {
            kill(pid, SIGKILL)
        }
        _ = try await running.exit.get()
        killer.cancel()
    }

    /// Stops the server and starts it again on the same port and directory (the data survives with persistence),
    /// with `arguments` added to its command line for this run; returns once it answers PING (its data loaded).
    public func restart(arguments: [String] = []) async throws {
        try await self.stop()
        try await self.launch(arguments: arguments)
    }

    /// Runs `redis-cli -p PORT args...` and returns its standard output without the trailing newline.
    @discardableResult
    public func command(_ args: String...) async throws -> String {
        try await Self.cli(port: self.port, tls: self.tls, args)
    }

    /// Kills the process (SIGKILL) without waiting. Also done by deinit.
    public func terminate() {
        let running = self.lock.withLock { () -> Running? in
            defer { self.running = nil }
            return self.running
        }
        if let running, running.process.isRunning {
            kill(running.process.processIdentifier, SIGKILL)
        }
    }

    // MARK: -

    private func launch(arguments extraArguments: [String] = []) async throws {
        let process = Process()
        process.executableURL = try Self.executable("redis-server")
        var arguments = [
            "--port", self.tls == nil ? String(self.port) : "0",
            "--bind", "127.0.0.1",
            "--dir", self.directory.path,
            "--logfile", "redis.log",
            "--daemonize", "no",
            "--save", "",
        ]
        if let tls = self.tls {
            arguments += [
                "--tls-port", String(self.port), "--tls-cert-file", tls.serverCertificate, "--tls-key-file", tls.serverKey,
                "--tls-ca-cert-file", tls.authority, "--tls-auth-clients", "no",
            ]
        }
        if self.persistence {
            arguments += ["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            arguments += ["--appendonly", "no"]
        }
        process.arguments = arguments + extraArguments
        process.currentDirectoryURL = self.directory
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let exit = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Int32.self)
        process.terminationHandler = { process in
            exit.succeed(process.terminationStatus)
        }
        try await Self.spawn(process)
        self.lock.withLock {
            self.running = Running(process: process, exit: exit.futureResult)
        }

        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            guard process.isRunning else { break }
            if let reply = try? await Self.cli(port: self.port, tls: self.tls, ["PING"]), reply == "PONG" {
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        self.terminate()
        let log = (try? String(contentsOf: self.directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
        throw RedisServerError.didNotStart(port: self.port, log: log)
    }

    /// Runs `process` from a thread-pool thread with all signals unblocked for the moment of the spawn: the child
    /// inherits the spawning thread's signal mask, and Swift concurrency's threads block SIGTERM, which would make
    /// redis-server ignore `stop()`.
    private static func spawn(_ process: Process) async throws {
        try await NIOThreadPool.singleton.runIfActive {
            try ChildRegistry.spawnLocked { try process.run() }
        }
    }

    private static func cli(port: Int, tls: TestCertificates?, _ args: [String]) async throws -> String {
        let executable = try Self.executable("redis-cli")
        return try await NIOThreadPool.singleton.runIfActive {
            let process = Process()
            process.executableURL = executable
            process.arguments = ["-p", String(port)] + (tls.map { ["--tls", "--cacert", $0.authority] } ?? []) + args
            process.standardInput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            // The pipe is made inside the spawn lock too, so no other child can inherit its write end.
            let output = try ChildRegistry.spawnLocked { () throws -> Pipe in
                let output = Pipe()
                process.standardOutput = output
                try process.run()
                return output
            }
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            var text = String(decoding: data, as: UTF8.self)
            while text.hasSuffix("\n") || text.hasSuffix("\r\n") || text.hasSuffix("\r") {
                text.removeLast()
            }
            return text
        }
    }

    private static func executable(_ name: String) throws -> URL {
        guard let url = executableInPath(name) else { throw RedisServerError.executableNotFound(name) }
        return url
    }
}
