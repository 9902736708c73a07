import CurlClient
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers

/// Live tokens from engines that stream a run's output instead of posting deltas (LangGraph): the node that
/// started a run joins the engine's stream of it and publishes each reply chunk as a `delta` frame, exactly like
/// a native delta (numbered, idempotent by index in Redis, logged for resume, never stored). The final message
/// still comes from the webhook, so a client that missed deltas is right in the end.
///
/// A dropped join is rejoined from the engine's first event with bounded retries; events already relayed are
/// recognised and skipped, so a rejoin neither repeats nor loses a chunk when the engine can replay. An engine
/// that cannot be joined (404/405/422) leaves the run to its webhook. At most `maxJoins` joins run at once per
/// node; a run beyond that gets its final message only. A join ends when the engine ends the stream, when the
/// run's final result is stored on this node (`stop`), at the run timeout, or at shutdown.
public final class EngineStreamJoins: Sendable {
    /// What a join needs to know about its run.
    public struct Target: Sendable {
        public var request: AgentRunRequest
        public var engineRunID: String
    }

    private let http: CurlHTTPClient
    private let adapter: any AgentAdapter
    private let publisher: FramePublisher
    private let jobs: BackgroundJobs
    private let maxJoins: Int
    private let joinTimeout: Duration
    private let maxConsecutiveFailures = 5
    private let logger: Logger
    /// Joins in progress, by Herald run id.
    private let active = NIOLockedValueBox([UUID: Task<Void, Never>]())

    public init(
        http: CurlHTTPClient, adapter: any AgentAdapter, publisher: FramePublisher, jobs: BackgroundJobs, maxJoins: Int,
        runTimeoutSeconds: Double, logger: Logger
    ) {
        self.http = http
        self.adapter = adapter
        self.publisher = publisher
        self.jobs = jobs
        self.maxJoins = maxJoins
        self.joinTimeout = .milliseconds(Int64(runTimeoutSeconds * 1000))
        self.logger = logger
    }

    public var activeCount: Int { active.withLockedValue { $0.count } }

    /// Joins the run's stream in the background, unless the adapter has none or the node is at its limit.
    /// `isFinal` is asked once the join is registered: a final result stored before that point would otherwise
    /// find no join to stop, and the join would relay chunks after the final message.
    func join(_ target: Target, isFinal: @escaping @Sendable () async -> Bool) {
        guard let request = adapter.joinRequest(for: target.request, engineRunID: target.engineRunID, timeout: joinTimeout) else { return }
        let run = target.request.run
        jobs.submit { [self] in
            // Registered and started under one lock: `stop` sees the join either not at all (and then `isFinal`
            // already reads the final result) or registered (and cancels it).
            let task: Task<Void, Never>? = active.withLockedValue { active in
                guard active.count < maxJoins, active[run] == nil else { return nil }
                let task = Task { [self] in
                    guard await !isFinal() else { return }
                    await relay(target, request: request)
                }
                active[run] = task
                return task
            }
            guard let task else {
                count("skipped")
                logger.info("engine stream not joined: the node is at its join limit", metadata: ["run": "\(run.text)", "limit": "\(maxJoins)"])
                return
            }
            await withTaskCancellationHandler { await task.value } onCancel: { task.cancel() }
            active.withLockedValue { active in
                if active[run] == task { active[run] = nil }
            }
        }
    }

    /// Ends the run's join, if this node has one, and waits until it can publish nothing more. With a `grace`,
    /// the join first has that long to end by itself: an engine ends its stream with the run, and its result may
    /// overtake the stream's last chunks, which would otherwise be lost as deltas.
    public func stop(_ run: UUID, grace: Duration = .zero) async {
        guard let task = active.withLockedValue({ $0.removeValue(forKey: run) }) else { return }
        let deadline = Task {
            if grace > .zero { try? await Task.sleep(for: grace) }
            task.cancel()
        }
        await task.value
        deadline.cancel()
    }

    // MARK: Relay

    private enum JoinEnd {
        /// The engine ended the stream: the run is over.
        case finished
        /// The engine cannot be joined for this run; its webhook alone settles it.
        case unsupported(status: Int)
    }

    private func relay(_ target: Target, request: CurlRequest) async {
        let run = target.request.run
        var progress = RelayProgress()
        var failures = 0
        count("started")
        while !Task.isCancelled {
            let relayedBefore = progress.nextIndex
            do {
                switch try await joinOnce(target, request: request, progress: &progress) {
                case .finished:
                    logger.debug("engine stream ended", metadata: ["run": "\(run.text)", "deltas": "\(progress.nextIndex)"])
                case .unsupported(let status):
                    count("unsupported")
                    logger.debug("the engine cannot be joined; the run completes from its webhook", metadata: ["run": "\(run.text)", "status": "\(status)"])
                }
                return
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                failures = progress.nextIndex > relayedBefore ? 1 : failures + 1
                guard failures <= maxConsecutiveFailures else {
                    count("failed")
                    logger.warning("engine stream lost; the run completes from its webhook", metadata: ["run": "\(run.text)", "error": "\(error)"])
                    return
                }
                count("rejoined")
                logger.debug("engine stream dropped; rejoining", metadata: ["run": "\(run.text)", "attempt": "\(failures)", "error": "\(error)"])
                // Exponential backoff from 100 ms to 3.2 s; a join that relayed something starts over at 100 ms.
                try? await Task.sleep(for: .milliseconds(100 << min(failures - 1, 5)))
            }
        }
    }

    /// What a run's joins have relayed so far.
    private struct RelayProgress {
        /// The index of the next delta.
        var nextIndex = 0
        /// Events already relayed, by event id and data: every join replays the stream from its first event, and
        /// an engine may deliver an event twice where its replay meets its live tail (`langgraph dev` does). Ids
        /// alone are not enough: `langgraph dev` gives every event of one millisecond the same id. Events without
        /// an id come from a stream that cannot replay, so they are never repeats.
        var relayed = Set<Int>()

        /// The event's key in `relayed`; nil for an event without an id.
        static func key(of event: ServerSentEvent) -> Int? {
            guard !event.lastEventID.isEmpty else { return nil }
            var hasher = Hasher()
            hasher.combine(event.lastEventID)
            hasher.combine(event.data)
            return hasher.finalize()
        }
    }

    /// One connection to the engine's stream, from its first event.
    private func joinOnce(_ target: Target, request: CurlRequest, progress: inout RelayProgress) async throws -> JoinEnd {
        let response = try await http.stream(request)
        switch response.head.status {
        case 200..<300:
            break
        case 404, 405, 422:
            return .unsupported(status: response.head.status)
        default:
            throw EngineStreamError(message: "the engine answered HTTP \(response.head.status)")
        }
        var parser = EventStreamParser()
        for try await piece in response.body {
            for event in try parser.feed(piece) {
                guard let text = adapter.replyText(in: event, engineRunID: target.engineRunID) else { continue }
                let key = RelayProgress.key(of: event)
                if let key, progress.relayed.contains(key) { continue }
                try Task.checkCancellation()
                try await publish(text, index: progress.nextIndex, of: target.request)
                progress.nextIndex += 1
                if let key { progress.relayed.insert(key) }
            }
        }
        return .finished
    }

    private func publish(_ text: String, index: Int, of run: AgentRunRequest) async throws {
        let delta = StreamEvent.Delta(threadID: run.thread, runID: run.run, messageID: run.assistantMessageID, index: index, delta: text)
        if try await publisher.publishDelta(delta, index: index) == .published {
            Counter(label: "herald_agent_stream_deltas_total").increment()
        }
    }

    private func count(_ outcome: String) {
        Counter(label: "herald_agent_stream_joins_total", dimensions: [("outcome", outcome)]).increment()
    }
}

struct EngineStreamError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
