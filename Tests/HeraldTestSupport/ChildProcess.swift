// Spawning the programs under test (herald, the demo agent, helper scripts) with Foundation.Process,
// their output in a log file, and bookkeeping so that none outlives the test process:
// - `terminate()` on deinit;
// - an atexit handler that SIGKILLs every child still running when the test process exits normally;
// - a watchdog per child (a tiny /bin/sh loop, not our child's parent) that SIGKILLs the child once the
//   test process is gone, for when the test process crashes or is killed.
// PR_SET_PDEATHSIG is not used: it fires when the *thread* that spawned the child exits, and Swift
// concurrency's pool threads may exit while the test process lives on.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure of `ChildProcess`, `waitUntilHealthy` or `builtProduct`.
public struct ChildProcessError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public final class ChildProcess: Sendable {
    public let pid: Int32
    /// The file that receives the child's stdout and stderr.
    public let logPath: String
    public let executable: String
    private let process: ProcessBox
    private let state: ChildLockedState

    private init(pid: Int32, logPath: String, executable: String, process: ProcessBox, state: ChildLockedState) {
        self.pid = pid
        self.logPath = logPath
        self.executable = executable
        self.process = process
        self.state = state
    }

    /// Starts `executable` with `arguments` and `environment` merged over the current environment, in
    /// `directory` (the test's own by default); stdout and stderr go to a fresh temporary log file (`logPath`).
    public static func start(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], directory: String? = nil
    ) throws -> ChildProcess {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw ChildProcessError("not an executable file: \(executable)")
        }
        let name = (executable as NSString).lastPathComponent
        let logPath = (NSTemporaryDirectory() as NSString)
            .appendingPathComponent("herald-test-\(name)-\(getpid())-\(UUID().uuidString.prefix(8)).log")
        guard FileManager.default.createFile(atPath: logPath, contents: nil), let log = FileHandle(forWritingAtPath: logPath) else {
            throw ChildProcessError("cannot create log file \(logPath)")
        }
        defer { try? log.close() }  // the child has its own copy of the descriptor

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log

        let state = ChildLockedState()
        process.terminationHandler = { finished in
            let status = finished.terminationReason == .uncaughtSignal
                ? 128 + finished.terminationStatus
                : finished.terminationStatus
            state.exited(status: status)
            ChildRegistry.remove(finished.processIdentifier)
        }
        ChildRegistry.installExitHandlerOnce()
        try ChildRegistry.spawnLocked {
            try process.run()
            ChildRegistry.add(process.processIdentifier)
        }
        let pid = process.processIdentifier
        startWatchdog(child: pid)
        return ChildProcess(pid: pid, logPath: logPath, executable: executable, process: ProcessBox(process), state: state)
    }

    deinit { terminate() }

    /// Everything the child wrote to stdout and stderr so far.
    public func log() -> String {
        (try? String(contentsOfFile: logPath, encoding: .utf8))
            ?? FileManager.default.contents(atPath: logPath).map { String(decoding: $0, as: UTF8.self) }
            ?? ""
    }

    /// The last `maxLines` lines of the log.
    public func logTail(maxLines: Int = 40) -> String {
        log().split(separator: "\n", omittingEmptySubsequences: false).suffix(maxLines).joined(separator: "\n")
    }

    /// Whether the child has not been reaped yet.
    public var isRunning: Bool { state.exitStatus == nil }

    /// The exit status once the child has exited (see `waitForExit`).
    public var exitStatus: Int32? { state.exitStatus }

    /// Sends `signal` (e.g. SIGTERM, SIGKILL) if the child is still running.
    public func signal(_ signal: Int32) {
        // The pid cannot have been reused while the child is not reaped; `isRunning` turns false only
        // after Foundation has reaped it.
        if isRunning { _ = kill(pid, signal) }
    }

    /// Waits for the child to exit and returns its status: the exit code, or 128 + the signal number
    /// when a signal ended it (as a shell reports it). Throws on timeout, with the log's tail.
    @discardableResult
    public func waitForExit(timeout: Duration) async throws -> Int32 {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            if let status = state.exitStatus { return status }
            if ContinuousClock.now >= deadline {
                throw ChildProcessError("\(executable) (pid \(pid)) still running after \(timeout); log tail:\n\(logTail())")
            }
            await state.waitForExit(until: deadline)
        }
    }

    /// SIGKILL to the child and its process group (so that e.g. a shell's own children go too) if it is
    /// still running. Does not wait; `waitForExit` does. Foundation notices the exit only once every process
    /// that inherited the child's descriptors is gone, hence the group.
    public func terminate() {
        if isRunning { killGroup(pid) }
    }

    /// A watchdog per child: a `/bin/sh` loop, reparented away once we die, that SIGKILLs the child's group
    /// once this process is gone (checked every half second) and ends by itself once the child is gone.
    private static func startWatchdog(child: Int32) {
        let parent = getpid()
        let script = """
            while kill -0 \(parent) 2>/dev/null && kill -0 \(child) 2>/dev/null; do sleep 0.5; done
            kill -0 \(parent) 2>/dev/null || kill -9 -- -\(child) 2>/dev/null || kill -9 \(child) 2>/dev/null
            """
        let watchdog = Process()
        watchdog.executableURL = URL(fileURLWithPath: "/bin/sh")
        watchdog.arguments = ["-c", script]
        watchdog.standardInput = FileHandle.nullDevice
        watchdog.standardOutput = FileHandle.nullDevice
        watchdog.standardError = FileHandle.nullDevice
        try? ChildRegistry.spawnLocked { try watchdog.run() }
        // Not added to the registry: it ends by itself after the child. It stays our child while we live
        // (so `kill -0 child` also sees the child as a zombie until Foundation reaps it: fine either way).
        ChildRegistry.keep(watchdog)
    }
}

/// Polls `GET url` until it answers 200 or `timeout` passes; then throws, with the log tail of
/// `process` when given. Also throws early when `process` exits.
public func waitUntilHealthy(_ url: String, timeout: Duration = .seconds(20), process: ChildProcess? = nil) async throws {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    var last = "no attempt"
    while true {
        do {
            let remaining = deadline - ContinuousClock.now
            let attempt = min(max(remaining, .milliseconds(100)), .seconds(2))
            let response = try await TestHTTPClient.request("GET", url, timeout: attempt)
            if response.status == 200 { return }
            last = "status \(response.status): \(response.text.prefix(300))"
        } catch {
            last = "\(error)"
        }
        if let process, !process.isRunning {
            throw ChildProcessError(
                "\(process.executable) exited with status \(process.exitStatus ?? -1) before \(url) was healthy (\(last)); log tail:\n\(process.logTail())"
            )
        }
        if ContinuousClock.now >= deadline {
            let tail = process.map { "; log tail of \($0.executable):\n\($0.logTail())" } ?? ""
            throw ChildProcessError("\(url) not healthy after \(timeout) (last: \(last))\(tail)")
        }
        try await Task.sleep(for: .milliseconds(100))
    }
}

/// The path of a product built next to the running tests, e.g. `builtProduct("herald")` →
/// `<package>/.build/<triple>/debug/herald` when run by `swift test`.
/// Set `HERALD_BUILD_DIR` to look in another directory.
public func builtProduct(_ name: String) -> String {
    (builtProductsDirectory() as NSString).appendingPathComponent(name)
}

private func builtProductsDirectory() -> String {
    if let override = ProcessInfo.processInfo.environment["HERALD_BUILD_DIR"], !override.isEmpty {
        return override
    }
    // macOS: the tests are a .xctest bundle loaded by a runner; the products sit beside the bundle.
    if let bundle = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) {
        return (bundle.bundlePath as NSString).deletingLastPathComponent
    }
    // Linux: the tests are an executable (`<package>PackageTests.xctest`) in the products directory.
    #if os(Linux)
    if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
        return (executable as NSString).deletingLastPathComponent
    }
    #endif
    let argument0 = CommandLine.arguments.first ?? "."
    let absolute = argument0.hasPrefix("/")
        ? argument0
        : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(argument0)
    return ((absolute as NSString).resolvingSymlinksInPath as NSString).deletingLastPathComponent
}

// MARK: - Bookkeeping

/// Holds a `Process`. `@unchecked Sendable`: `Process` is not marked Sendable on every platform; after
/// `run()` we never mutate it, only keep it alive until the child is reaped.
private final class ProcessBox: @unchecked Sendable {
    let process: Process
    init(_ process: Process) { self.process = process }
}

/// The exit status and its waiters. `@unchecked Sendable`: all state is accessed under `lock`.
private final class ChildLockedState: @unchecked Sendable {
    private let lock = NSLock()
    private var status: Int32?
    private var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    private var woken: Set<Int> = []
    private var nextID = 0

    var exitStatus: Int32? {
        lock.withLock { status }
    }

    func exited(status: Int32) {
        let all = lock.withLock {
            self.status = status
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }
        for waiter in all { waiter.resume() }
    }

    /// Returns once the child exited, `deadline` passed, or the task was cancelled.
    func waitForExit(until deadline: ContinuousClock.Instant) async {
        let id = lock.withLock {
            nextID += 1
            return nextID
        }
        let timer = Task { [self] in
            try? await Task.sleep(until: deadline, clock: .continuous)
            wake(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = lock.withLock {
                    if status != nil || woken.remove(id) != nil { return true }
                    waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            wake(id)
        }
        timer.cancel()
        lock.withLock { _ = woken.remove(id) }
    }

    private func wake(_ id: Int) {
        let waiter = lock.withLock {
            let waiter = waiters.removeValue(forKey: id)
            if waiter == nil { woken.insert(id) }
            return waiter
        }
        waiter?.resume()
    }
}

/// SIGKILL to the child's process group (Foundation starts each child as the leader of a new group),
/// so that its own children go too; to the child alone where it leads no group.
private func killGroup(_ pid: Int32) {
    if kill(-pid, SIGKILL) != 0 { _ = kill(pid, SIGKILL) }
}

/// Pids of children still running, SIGKILLed by an atexit handler; watchdog `Process`es kept alive.
/// Every child process the test support starts is spawned through `spawnLocked`: Foundation's `Process`
/// leaves the descriptors of a spawn in progress (its exit-notification socket, pipes) inheritable, and a
/// second spawn at that moment would carry them into an unrelated, long-lived child, after which the first
/// child's exit is never noticed (its `waitUntilExit` hangs, it stays a zombie). Nor does it close the
/// parent's other descriptors in the child, and SwiftNIO opens sockets without `SOCK_CLOEXEC`: a test's
/// client connection open at a spawn would live on in that child after the test closed it, and the server
/// would count it as open (a Redis subscriber still subscribed, an SSE stream still connected).
enum ChildRegistry {
    /// `nonisolated(unsafe)`: only touched while holding `lock`.
    nonisolated(unsafe) private static var pids: Set<Int32> = []
    nonisolated(unsafe) private static var watchdogs: [Process] = []
    nonisolated(unsafe) private static var exitHandlerInstalled = false
    private static let lock = NSLock()
    /// Serialises spawns, so a pid is in `pids` before another thread could look.
    private static let spawnLock = NSLock()

    /// Runs `body` (a `Process.run()`) serialised with other spawns and with no signal blocked on the
    /// calling thread: posix_spawn gives the child the calling thread's signal mask, Foundation does not
    /// reset it, and Swift concurrency's pool threads block SIGTERM, SIGINT and most others, which would
    /// leave the child deaf to `signal(SIGTERM)`.
    static func spawnLocked<Result>(_ body: () throws -> Result) throws -> Result {
        try spawnLock.withLock {
            var none = sigset_t()
            var previous = sigset_t()
            sigemptyset(&none)
            pthread_sigmask(SIG_SETMASK, &none, &previous)
            defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
            closeOnExec()
            return try body()
        }
    }

    /// Marks every descriptor above standard error close-on-exec (a child's own pipes are dup2'ed onto 0–2 by the
    /// spawn, which clears the flag there).
    private static func closeOnExec() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let descriptor = Int32(name), descriptor > 2 {
                _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
            }
        }
    }

    static func add(_ pid: Int32) {
        lock.withLock { _ = pids.insert(pid) }
    }

    static func remove(_ pid: Int32) {
        // Under spawnLock too: a child that exits at once must not be removed before it was added.
        spawnLock.withLock {
            lock.withLock { _ = pids.remove(pid) }
        }
    }

    static func keep(_ watchdog: Process) {
        lock.withLock {
            watchdogs.removeAll { !$0.isRunning }
            watchdogs.append(watchdog)
        }
    }

    static func installExitHandlerOnce() {
        lock.withLock {
            guard !exitHandlerInstalled else { return }
            exitHandlerInstalled = true
            atexit { ChildRegistry.killAll() }
        }
    }

    static func killAll() {
        let all = lock.withLock {
            defer { pids.removeAll() }
            return pids
        }
        for pid in all { killGroup(pid) }
    }
}

/// The first `name` on PATH (then /usr/bin and /usr/local/bin) that is executable.
public func executableInPath(_ name: String) -> URL? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for directory in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) {
            return URL(fileURLWithPath: candidate)
        }
    }
    return nil
}
