import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A real PostgreSQL server for tests: `initdb` into a temporary directory (trust auth, UTF8, no fsync), `postgres`
/// on 127.0.0.1 and a free port, its socket in that directory.
///
/// PostgreSQL refuses to run as root. When the tests run as root, `initdb` and `postgres` run as the `postgres`
/// user (created if missing) through `setpriv` (or `runuser` where `setpriv` is missing), and the directory is
/// handed to that user. `setpriv --pdeathsig=QUIT` makes the kernel stop the server (immediate shutdown) when the
/// thread that started it dies, i.e. when the test process ends however it ends; that thread lives exactly as long
/// as the server. Directories left by earlier test processes that are gone are removed on the next `start()`.
///
/// One server per test process is the intended use, with `createDatabase()` per test.
public final class PostgresServer: Sendable {
    /// The TCP port on 127.0.0.1.
    public let port: Int
    /// The temporary directory: `data/`, `postgres.log`, and the Unix socket.
    public let directory: String
    /// The superuser; trust authentication, no password.
    public let user = "postgres"
    private let binDirectory: String
    private let pid: pid_t

    private init(port: Int, directory: String, binDirectory: String, pid: pid_t) {
        self.port = port
        self.directory = directory
        self.binDirectory = binDirectory
        self.pid = pid
    }

    public enum Failure: Error, CustomStringConvertible {
        case binariesNotFound
        case commandFailed(String, output: String)
        case didNotStart(String)

        public var description: String {
            switch self {
            case .binariesNotFound:
                "PostgreSQL server binaries (initdb, postgres) not found; set HERALD_PG_BIN to their directory"
            case .commandFailed(let command, let output):
                "\(command) failed:\n\(output)"
            case .didNotStart(let log):
                "postgres did not start:\n\(log)"
            }
        }
    }

    /// One server for the whole test process, started on first use; create a database per test on it.
    public static func shared() async throws -> PostgresServer {
        try await sharedServer.value
    }

    private static let sharedServer = Task { try await PostgresServer.start() }

    /// Starts a fresh server and waits until it accepts connections.
    /// With `tls`, the server also accepts TLS (`ssl=on`) with the server certificate of `tls`.
    public static func start(tls: TestCertificates? = nil) async throws -> PostgresServer {
        removeAbandonedDirectories()
        let binDirectory = try findBinDirectory()
        let account = try Account.forServer()
        let directory = try makeDirectory()
        do {
            try "\(getpid())\n".write(toFile: "\(directory)/owner.pid", atomically: true, encoding: .utf8)
            if let account { try account.giveOwnership(of: directory) }
            let data = "\(directory)/data"
            try await run(
                try commandPrefix(account, pdeathsig: false) + [
                    "\(binDirectory)/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--no-locale", "--no-sync", "--no-instructions",
                ],
                in: directory
            )
            var tlsArguments: [String] = []
            if let tls {
                // PostgreSQL wants its key readable by its own account only.
                for (source, name) in [(tls.serverCertificate, "server.crt"), (tls.serverKey, "server.key")] {
                    try FileManager.default.copyItem(atPath: source, toPath: "\(data)/\(name)")
                    chmod("\(data)/\(name)", 0o600)
                    if let account { try account.giveOwnership(of: "\(data)/\(name)") }
                }
                tlsArguments = ["-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"]
            }
            var lastLog = ""
            for _ in 0..<5 {
                let port = freeTCPPort()
                let arguments =
                    try commandPrefix(account, pdeathsig: true) + [
                        // postgres needs a working directory it may read; ours may not be one.
                        "/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", directory,
                        "\(binDirectory)/postgres", "-D", data, "-p", String(port),
                        "-c", "listen_addresses=127.0.0.1",
                        "-c", "unix_socket_directories=\(directory)",
                        "-c", "fsync=off",
                        "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off",
                        "-c", "max_connections=300",
                        "-c", "max_parallel_workers_per_gather=0",
                    ] + tlsArguments
                let logPath = "\(directory)/postgres.log"
                let pid = try await spawnSupervised(arguments, logPath: logPath)
                let server = PostgresServer(port: port, directory: directory, binDirectory: binDirectory, pid: pid)
                if try await server.waitUntilReady() {
                    return server
                }
                lastLog = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                guard lastLog.contains("could not bind") || lastLog.contains("already in use") else { break }
                try? FileManager.default.removeItem(atPath: logPath)  // port taken meanwhile: try another
            }
            throw Failure.didNotStart(lastLog)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// The URL of a database on this server.
    public func url(database: String) -> String {
        "postgresql://\(user)@127.0.0.1:\(port)/\(database)"
    }

    /// Creates a new, uniquely named database and returns its URL.
    public func createDatabase() async throws -> String {
        let name = "test_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try await Self.run(
            ["\(binDirectory)/createdb", "-h", "127.0.0.1", "-p", String(port), "-U", user, name],
            in: directory
        )
        return url(database: name)
    }

    /// Fast shutdown (rolls back open transactions, disconnects clients); waits for the server to exit, then
    /// removes the directory.
    public func stop() async throws {
        if isRunning {
            kill(pid, SIGINT)
            let deadline = ContinuousClock.now + .seconds(30)
            while isRunning, ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
            if isRunning {
                kill(pid, SIGKILL)
                while isRunning { try? await Task.sleep(for: .milliseconds(20)) }
            }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The supervising thread reaps the server as soon as it exits, so "no such process" means it is gone.
    private var isRunning: Bool {
        kill(pid, 0) == 0 || errno != ESRCH
    }

    /// Polls `postmaster.pid`, whose 8th line becomes "ready" once connections are accepted. False if the server
    /// exited first.
    private func waitUntilReady() async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            guard isRunning else { return false }
            if let contents = try? String(contentsOfFile: "\(directory)/data/postmaster.pid", encoding: .utf8) {
                let lines = contents.split(separator: "\n", omittingEmptySubsequences: false)
                if lines.count > 7, lines[7].trimmingCharacters(in: .whitespaces) == "ready" {
                    return true
                }
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        kill(pid, SIGKILL)
        return false
    }

    // MARK: - Processes

    /// The unprivileged account the server runs as when the tests run as root.
    private struct Account {
        var name: String
        var uid: uid_t
        var gid: gid_t

        static func forServer() throws -> Account? {
            guard geteuid() == 0 else { return nil }
            if let account = lookUp("postgres") { return account }
            let useradd = ["/usr/sbin/useradd", "/sbin/useradd", "/usr/bin/useradd"].first {
                FileManager.default.isExecutableFile(atPath: $0)
            }
            guard let useradd else {
                throw Failure.commandFailed("running as root without a 'postgres' user; useradd", output: "missing")
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: useradd)
            process.arguments = ["--system", "--user-group", "--no-create-home", "postgres"]
            try ChildRegistry.spawnLocked { try process.run() }
            process.waitUntilExit()
            guard let account = lookUp("postgres") else {
                throw Failure.commandFailed("useradd postgres", output: "status \(process.terminationStatus)")
            }
            return account
        }

        private static func lookUp(_ name: String) -> Account? {
            guard let entry = getpwnam(name) else { return nil }
            return Account(name: name, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
        }

        func giveOwnership(of path: String) throws {
            guard chown(path, uid, gid) == 0 else {
                throw Failure.commandFailed("chown \(path)", output: String(cString: strerror(errno)))
            }
        }
    }

    private static let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    private static let runuser = ["/usr/sbin/runuser", "/sbin/runuser"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// The command prefix that runs a server binary as `account` (or as ourselves when it is nil).
    private static func commandPrefix(_ account: Account?, pdeathsig: Bool) throws -> [String] {
        let deathSignal = pdeathsig ? ["--pdeathsig=QUIT"] : []
        guard let account else {
            return setpriv.map { [$0] + deathSignal } ?? []
        }
        if let setpriv {
            return [setpriv, "--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups"] + deathSignal
        }
        if let runuser {
            return [runuser, "-u", account.name, "--"]
        }
        throw Failure.commandFailed("running as root: neither setpriv nor runuser found", output: "")
    }

    /// Runs a command to completion; throws with its output if it fails.
    private static func run(_ arguments: [String], in directory: String) async throws {
        let outputPath = "\(directory)/command-\(UUID().uuidString).log"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        defer { try? output.close() }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { process in
                continuation.resume(returning: process.terminationStatus)
            }
            do {
                try ChildRegistry.spawnLocked { try process.run() }
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        guard status == 0 else {
            let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
            throw Failure.commandFailed(arguments.joined(separator: " "), output: text)
        }
    }

    /// Starts a long-running process from a dedicated thread that then waits for (and reaps) it, so the thread lives
    /// exactly as long as the process; `--pdeathsig` is tied to that thread. Output goes to `logPath`.
    private static func spawnSupervised(_ arguments: [String], logPath: String) async throws
        -> pid_t
    {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<pid_t, any Error>) in
            let thread = Thread {
                var actions = posix_spawn_file_actions_t()
                posix_spawn_file_actions_init(&actions)
                defer { posix_spawn_file_actions_destroy(&actions) }
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                posix_spawn_file_actions_adddup2(&actions, 1, 2)

                let argv = arguments.map { strdup($0) } + [nil]
                defer { argv.forEach { free($0) } }
                var pid = pid_t()
                let result = (try? ChildRegistry.spawnLocked { posix_spawn(&pid, arguments[0], &actions, nil, argv, environ) }) ?? EAGAIN
                guard result == 0 else {
                    continuation.resume(
                        throwing: Failure.commandFailed(arguments[0], output: String(cString: strerror(result)))
                    )
                    return
                }
                continuation.resume(returning: pid)
                var status: Int32 = 0
                while waitpid(pid, &status, 0) == -1, errno == EINTR {}
            }
            thread.name = "postgres-supervisor"
            thread.start()
        }
    }

    // MARK: - Files

    private static let directoryPrefix = "herald-pg-"

    private static var temporaryRoot: String {
        // Short: the Unix socket path must fit in 107 bytes.
        FileManager.default.fileExists(atPath: "/tmp") ? "/tmp" : NSTemporaryDirectory()
    }

    private static func makeDirectory() throws -> String {
        var template = Array("\(temporaryRoot)/\(directoryPrefix)XXXXXX".utf8CString)
        guard let path = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw Failure.commandFailed("mkdtemp", output: String(cString: strerror(errno)))
        }
        chmod(path, 0o755)
        return String(cString: path)
    }

    /// Removes directories whose test process and server have both exited (killed test runs).
    private static func removeAbandonedDirectories() {
        let root = temporaryRoot
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { return }
        for name in names where name.hasPrefix(directoryPrefix) {
            let path = "\(root)/\(name)"
            func pid(in file: String) -> pid_t? {
                guard let text = try? String(contentsOfFile: "\(path)/\(file)", encoding: .utf8) else { return nil }
                return text.split(separator: "\n").first.flatMap { pid_t($0.trimmingCharacters(in: .whitespaces)) }
            }
            guard let owner = pid(in: "owner.pid"), !isAlive(owner) else { continue }
            if let server = pid(in: "data/postmaster.pid"), isAlive(server) { continue }
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    /// Whether `pid` is a live process; a zombie (exited, not yet reaped, e.g. under an init that does not reap)
    /// counts as dead.
    private static func isAlive(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 || errno != ESRCH else { return false }
        #if os(Linux)
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let end = stat.lastIndex(of: ")")
        {
            return stat[stat.index(after: end)...].trimmingCharacters(in: .whitespaces).first != "Z"
        }
        #endif
        return true
    }

    private static func findBinDirectory() throws -> String {
        var candidates: [String] = []
        if let configured = ProcessInfo.processInfo.environment["HERALD_PG_BIN"] {
            candidates.append(configured)
        }
        // Debian/Ubuntu: /usr/lib/postgresql/<major>/bin, newest first.
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        candidates += versions.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin" }
        candidates += ["/usr/local/bin", "/usr/bin", "/opt/homebrew/bin", "/usr/local/pgsql/bin"]
        for candidate in candidates
        where FileManager.default.isExecutableFile(atPath: "\(candidate)/initdb")
            && FileManager.default.isExecutableFile(atPath: "\(candidate)/postgres")
        {
            return candidate
        }
        throw Failure.binariesNotFound
    }
}
