import Logging
import NIOCore
import NIOPosix

/// A pool of libpq connections. Blocking libpq calls run on a dedicated `NIOThreadPool` with one thread per
/// connection, never on an event loop or the NIO singleton pool. Connections open lazily up to `poolSize`; further
/// callers wait in FIFO order. A connection found broken is finished and replaced on the next use.
///
/// Call `shutdown()` when done.
public final class PostgresPool: Sendable {
    public let configuration: PostgresConfiguration
    private let logger: Logger
    private let threadPool: NIOThreadPool
    private let state: PoolState
    private let observer: PostgresPoolObserver

    public init(configuration: PostgresConfiguration, logger: Logger, observer: PostgresPoolObserver = .none) {
        precondition(configuration.poolSize >= 1, "poolSize must be at least 1")
        self.configuration = configuration
        self.logger = logger
        self.observer = observer
        self.state = PoolState(size: configuration.poolSize)
        self.threadPool = NIOThreadPool(numberOfThreads: configuration.poolSize)
        self.threadPool.start()
    }

    deinit {
        // A no-op after `shutdown()`; otherwise stops the threads (NIOThreadPool asserts it was shut down).
        threadPool.shutdownGracefully { _ in }
    }

    /// Runs one statement. Parameters are sent as text, `nil` as NULL; cast in SQL, e.g. `$1::uuid`.
    public func query(_ sql: String, _ parameters: [String?] = []) async throws -> PostgresResult {
        try await withConnection { handle in
            try handle.query(sql, parameters)
        }
    }

    /// `BEGIN`; body; `COMMIT`. If the body throws, `ROLLBACK` and rethrow. The body runs on a pool thread and may
    /// block, calling the connection synchronously; the connection must not escape it.
    public func transaction<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws -> T
    ) async throws -> T {
        try await withConnection { handle in
            _ = try handle.command("BEGIN")
            let connection = PostgresConnection(handle: handle)
            defer { connection.invalidate() }
            let value: T
            do {
                value = try body(connection)
            } catch {
                handle.rollback()
                throw error
            }
            if handle.isInFailedTransaction {
                handle.rollback()
                throw PostgresError(
                    kind: .server,
                    message: "current transaction is aborted; rolled back instead of committing",
                    sqlState: "25P02"
                )
            }
            let tag = try handle.command("COMMIT")
            guard tag == "COMMIT" else {
                throw PostgresError(kind: .server, message: "COMMIT ended in \(tag)", sqlState: "40000")
            }
            return value
        }
    }

    /// Runs a multi-statement script without parameters (`PQexec`), e.g. migrations.
    public func execute(script: String) async throws {
        try await withConnection { handle in
            try handle.execute(script: script)
        }
    }

    /// Fails waiting callers, finishes every connection (borrowed ones when they come back) and stops the threads
    /// after running statements complete.
    public func shutdown() async {
        let idle = await state.shutdown()
        if !idle.isEmpty {
            _ = try? await threadPool.runIfActive {
                for handle in idle { handle.close() }
            }
        }
        try? await threadPool.shutdownGracefully()
    }

    private struct Outcome<T: Sendable>: Sendable {
        var result: Result<T, any Error>
        /// The connection to return to the pool, `nil` if it was discarded or could not be opened.
        var handle: ConnectionHandle?
    }

    private func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (ConnectionHandle) throws -> T
    ) async throws -> T {
        do {
            return try await withLeasedConnection(body)
        } catch let error as PostgresError {
            observer.callFailed(error)
            throw error
        }
    }

    private func withLeasedConnection<T: Sendable>(
        _ body: @escaping @Sendable (ConnectionHandle) throws -> T
    ) async throws -> T {
        let waitStart = ContinuousClock.now
        let lease = try await state.acquire()
        observer.leaseAcquired(ContinuousClock.now - waitStart)
        let outcome: Outcome<T>
        do {
            outcome = try await threadPool.runIfActive { [configuration, logger] in
                Self.run(lease: lease, configuration: configuration, logger: logger, body)
            }
        } catch {
            // The work item never ran (task cancelled or thread pool stopped): the lease comes back untouched.
            await state.release(lease.handle)
            throw error is CancellationError ? PostgresError.cancelled : PostgresError.poolShutDown
        }
        await state.release(outcome.handle)
        return try outcome.result.get()
    }

    /// On a pool thread: make sure there is a healthy connection, run the body, leave the connection reusable or
    /// discard it.
    private static func run<T: Sendable>(
        lease: PoolState.Lease,
        configuration: PostgresConfiguration,
        logger: Logger,
        _ body: (ConnectionHandle) throws -> T
    ) -> Outcome<T> {
        let handle: ConnectionHandle
        if let leased = lease.handle, !leased.isStale() {
            handle = leased
        } else {
            if let stale = lease.handle {
                logger.info("postgres: replacing a connection the server closed")
                stale.close()
            }
            do {
                handle = try ConnectionHandle.connect(configuration: configuration, logger: logger)
                logger.debug("postgres: opened a connection")
            } catch {
                logger.warning("postgres: could not connect", metadata: ["error": "\(error)"])
                return Outcome(result: .failure(error), handle: nil)
            }
        }

        let result = Result { try body(handle) }
        guard handle.resetForReuse() else {
            logger.warning(
                "postgres: discarding a broken connection",
                metadata: result.failureDescription.map { ["error": "\($0)"] } ?? [:]
            )
            handle.close()
            return Outcome(result: result, handle: nil)
        }
        return Outcome(result: result, handle: handle)
    }
}

extension Result {
    fileprivate var failureDescription: String? {
        if case .failure(let error) = self { return "\(error)" }
        return nil
    }
}
