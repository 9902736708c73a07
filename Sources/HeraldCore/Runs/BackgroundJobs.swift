import ServiceLifecycle

/// Work that outlives the request that started it (triggering a run on the engine), run as child tasks of one
/// service so shutdown can cancel it instead of leaking unstructured tasks.
public final class BackgroundJobs: Service, Sendable {
    public typealias Job = @Sendable () async -> Void
    private let stream: AsyncStream<Job>
    private let continuation: AsyncStream<Job>.Continuation

    public init() {
        (stream, continuation) = AsyncStream.makeStream(of: Job.self)
    }

    public func submit(_ job: @escaping Job) {
        continuation.yield(job)
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            for await job in stream.cancelOnGracefulShutdown() {
                group.addTask { await job() }
            }
            group.cancelAll()
        }
    }
}
