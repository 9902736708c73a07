import CCurl
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An HTTP client on libcurl: one `curl_multi` handle driven by one dedicated thread serves every transfer.
///
/// Callers build their easy handle on their own thread, then hand it to the loop through a locked queue
/// and `curl_multi_wakeup`; only the loop thread adds, drives and removes easy handles. Completed
/// transfers resume the callers' continuations. Task cancellation fails the caller at once with
/// `CancellationError` and has the loop drop the transfer (closing its connection).
public final class CurlHTTPClient: Sendable {
    private let loop: CurlMultiLoop
    let logger: Logger
    let caFile: String?

    /// Initialises libcurl (once per process) and starts the loop thread.
    /// `caFile`: a PEM file of CAs to trust instead of the system's store, for servers on a private network.
    public init(logger: Logger, caFile: String? = nil) throws {
        try CurlGlobal.ensureInitialized()
        self.logger = logger
        self.caFile = caFile
        self.loop = try CurlMultiLoop(logger: logger)
        try loop.start()
    }

    deinit {
        loop.shutdown()
    }

    /// Runs one request. Any HTTP status is a response; transport failures throw `CurlError`,
    /// task cancellation throws `CancellationError`.
    public func execute(_ request: CurlRequest) async throws -> CurlResponse {
        try Task.checkCancellation()
        return try await run(Transfer(request: request, trusting: caFile))
    }

    /// Hands a configured transfer to the loop and waits for it to end.
    func run(_ transfer: Transfer) async throws -> CurlResponse {
        let loop = self.loop
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<CurlResponse, any Error>) in
                if transfer.begin(continuation) {
                    loop.submit(transfer)
                } else {
                    continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            transfer.cancel()
            loop.cancel(transfer)
        }
    }

    /// Stops the loop thread and waits for it to exit; transfers still pending fail with a `CurlError`
    /// whose `isShutdown` is true, and later `execute` calls throw it at once. Idempotent.
    public func shutdown() {
        loop.shutdown()
    }
}

/// `curl_global_init` exactly once per process (a global `let` is initialised lazily and thread-safely).
enum CurlGlobal {
    private static let initCode: UInt32 = curl_global_init(Int(CURL_GLOBAL_ALL)).rawValue

    static func ensureInitialized() throws {
        let code = CURLcode(rawValue: initCode)
        guard code == CURLE_OK else { throw CurlError(code, message: "curl_global_init failed") }
    }
}

/// The multi handle and its thread.
final class CurlMultiLoop: Sendable {
    private struct Queue: Sendable {
        var adds: [Transfer] = []
        var cancels: [Transfer] = []
        var stopping = false
    }

    private enum ThreadState: Equatable {
        case notStarted, running, exited
    }

    /// `CURLM *` is a plain pointer, hence not `Sendable`. Sharing it is sound: after `init` the loop
    /// thread is the only user except for `curl_multi_wakeup`, which libcurl documents as callable from
    /// any thread, and `curl_multi_cleanup` runs in `deinit`, when no other reference remains.
    private struct MultiHandle: @unchecked Sendable {
        let pointer: UnsafeMutableRawPointer
    }

    private let multi: MultiHandle
    private let logger: Logger
    private let queue = NIOLockedValueBox(Queue())
    private let threadState = ConditionLock(value: ThreadState.notStarted)

    init(logger: Logger) throws {
        guard let pointer = curl_multi_init() else {
            throw CurlError(CURLE_FAILED_INIT, message: "curl_multi_init failed")
        }
        self.multi = MultiHandle(pointer: pointer)
        self.logger = logger
    }

    deinit {
        curl_multi_cleanup(multi.pointer)
    }

    // MARK: - Any thread

    func start() throws {
        threadState.lock()
        threadState.unlock(withValue: .running)
        // The box carries a strong reference to `self` into the thread; the thread releases it on exit.
        let box = Unmanaged.passRetained(ThreadBody { [self] in self.run() })
        var thread = pthread_t()
        let rc = pthread_create(
            &thread,
            nil,
            { argument in
                let body = Unmanaged<ThreadBody>.fromOpaque(argument!).takeRetainedValue()
                ccurl_set_current_thread_name("herald-curl")
                body.run()
                return nil
            },
            box.toOpaque()
        )
        guard rc == 0 else {
            box.release()
            threadState.lock()
            threadState.unlock(withValue: .exited)
            throw CurlError(CURLE_FAILED_INIT, message: "pthread_create failed (\(rc))")
        }
        pthread_detach(thread)
    }

    func submit(_ transfer: Transfer) {
        let accepted = queue.withLockedValue { queue in
            guard !queue.stopping else { return false }
            queue.adds.append(transfer)
            return true
        }
        if accepted {
            curl_multi_wakeup(multi.pointer)
        } else {
            transfer.finish(.failure(CurlError.shutdown))
        }
    }

    func cancel(_ transfer: Transfer) {
        let accepted = queue.withLockedValue { queue in
            guard !queue.stopping else { return false }
            queue.cancels.append(transfer)
            return true
        }
        if accepted {
            curl_multi_wakeup(multi.pointer)
        }
    }

    func shutdown() {
        let first = queue.withLockedValue { queue in
            defer { queue.stopping = true }
            return !queue.stopping
        }
        if first {
            curl_multi_wakeup(multi.pointer)
        }
        // Wait for the thread to exit (it wakes at once); never started means nothing to wait for.
        if threadState.value == .running {
            threadState.lock(whenValue: .exited)
            threadState.unlock()
        }
    }

    // MARK: - Loop thread

    private func run() {
        logger.debug("curl multi loop started")
        let multi = self.multi.pointer
        // Transfers inside the multi handle, by easy handle. Touched only on this thread.
        var active: [UnsafeMutableRawPointer: Transfer] = [:]

        func remove(_ transfer: Transfer) {
            let code = curl_multi_remove_handle(multi, transfer.easy)
            if code != CURLM_OK {
                logger.error("curl_multi_remove_handle failed", metadata: ["code": "\(code.rawValue)"])
            }
        }

        while true {
            let work = queue.withLockedValue { queue in
                defer {
                    queue.adds.removeAll()
                    queue.cancels.removeAll()
                }
                return queue
            }

            for transfer in work.adds where !transfer.isDone {
                let code = curl_multi_add_handle(multi, transfer.easy)
                if code == CURLM_OK {
                    active[transfer.easy] = transfer
                } else {
                    let message = String(cString: curl_multi_strerror(code))
                    transfer.finish(.failure(CurlError(CURLE_FAILED_INIT, message: "curl_multi_add_handle: \(message)")))
                }
            }
            for transfer in work.cancels {
                if active.removeValue(forKey: transfer.easy) != nil {
                    remove(transfer)
                    logger.debug("curl transfer cancelled", metadata: ["method": "\(transfer.method)", "url": "\(transfer.url)"])
                }
                transfer.finish(.failure(CancellationError()))
            }
            if work.stopping {
                for transfer in active.values {
                    remove(transfer)
                    transfer.finish(.failure(CurlError.shutdown))
                }
                active.removeAll()
                break
            }

            var running: Int32 = 0
            let performCode = curl_multi_perform(multi, &running)
            if performCode != CURLM_OK {
                logger.error("curl_multi_perform failed", metadata: ["code": "\(performCode.rawValue)"])
            }

            var easy: UnsafeMutableRawPointer?
            var result = CURLE_OK
            while ccurl_multi_info_read_done(multi, &easy, &result) != 0 {
                guard let done = easy, let transfer = active.removeValue(forKey: done) else { continue }
                remove(transfer)
                let outcome = transfer.result(for: result)
                switch outcome {
                case .success(let response):
                    logger.trace(
                        "curl transfer finished",
                        metadata: ["method": "\(transfer.method)", "url": "\(transfer.url)", "status": "\(response.status)"]
                    )
                case .failure(let error):
                    logger.debug(
                        "curl transfer failed",
                        metadata: ["method": "\(transfer.method)", "url": "\(transfer.url)", "error": "\(error)"]
                    )
                }
                transfer.finish(outcome)
            }

            // Sleeps until a socket is ready, curl's next timeout, a wakeup, or 1 s at most.
            let pollCode = curl_multi_poll(multi, nil, 0, 1000, nil)
            if pollCode != CURLM_OK {
                logger.error("curl_multi_poll failed", metadata: ["code": "\(pollCode.rawValue)"])
                usleep(10_000)  // do not spin if polling keeps failing
            }
        }

        logger.debug("curl multi loop stopped")
        threadState.lock()
        threadState.unlock(withValue: .exited)
    }
}

/// A closure handed to a new pthread.
private final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
