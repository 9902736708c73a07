import CurlClient
import Foundation
import Logging
import Metrics
import NIOCore
import Tracing

/// The send → engine → webhook → stream loop: stores first, then publishes, so a client refetching over REST
/// never misses what the stream showed; every final result is published exactly once (outbox flag in `runs`).
public final class RunCoordinator: Sendable {
    public let store: ChatStore
    public let publisher: FramePublisher
    private let http: CurlHTTPClient
    private let adapter: any AgentAdapter
    private let jobs: BackgroundJobs
    private let retryPolicy: RetryPolicy
    private let callbackBase: String
    private let runTimeoutSeconds: Double
    /// Live tokens of engines that stream runs instead of posting deltas; nil when streaming is off.
    public let streamJoins: EngineStreamJoins?
    /// Open runs this node knows: a delta, or a callback token check, needs no PostgreSQL read.
    private let openRuns: OpenRunCache
    /// Nil while `HERALD_CACHE_TTL_SECONDS` is 0: `use_cache` then changes nothing.
    private let responseCache: ResponseCache?
    private let logger: Logger

    public init(
        store: ChatStore, publisher: FramePublisher, http: CurlHTTPClient, adapter: any AgentAdapter, jobs: BackgroundJobs,
        configuration: HeraldConfiguration, logger: Logger
    ) {
        self.store = store
        self.publisher = publisher
        self.http = http
        self.adapter = adapter
        self.jobs = jobs
        self.retryPolicy = RetryPolicy(maxAttempts: configuration.agentMaxAttempts, initialDelay: .milliseconds(200), maxDelay: .seconds(5))
        self.callbackBase = configuration.publicURL
        self.runTimeoutSeconds = configuration.runTimeoutSeconds
        self.streamJoins = configuration.agentStream
            ? EngineStreamJoins(
                http: http, adapter: adapter, publisher: publisher, jobs: jobs, maxJoins: configuration.agentStreamMaxJoins,
                runTimeoutSeconds: configuration.runTimeoutSeconds, logger: logger
            )
            : nil
        // No longer than a run lives, nor than Redis keeps the delta set that marks a run's end.
        self.openRuns = OpenRunCache(
            capacity: 65_536, lifetime: .seconds(min(configuration.runTimeoutSeconds, Double(configuration.logTTLSeconds)))
        )
        self.responseCache = configuration.responseCacheTTLSeconds > 0
            ? ResponseCache(
                redis: publisher.redis, prefix: configuration.channelPrefix, ttlSeconds: configuration.responseCacheTTLSeconds,
                assistantIdentity: adapter.assistantIdentity
            )
            : nil
        self.logger = logger
    }

    // MARK: Send

    /// Stores the user's message and a queued run, publishes both, and hands the run to the engine in the
    /// background. Returns without waiting for the engine. With `useCache` (and the cache on), a reply cached for
    /// this question is the answer instead (`cached`); otherwise the run's reply, once completed, fills the cache.
    public func send(
        thread: UUID, owner: String, content: String, metadata: JSONValue, useCache: Bool = false
    ) async throws -> (message: ChatMessage, run: ChatRun, cached: Bool) {
        var cacheKey: String?
        if useCache, let responseCache {
            let key = responseCache.key(for: content)
            if let reply = try await responseCache.reply(for: key) {
                let (message, run) = try await sendCached(reply, thread: thread, owner: owner, content: content, metadata: metadata)
                ResponseCache.count(.hit)
                return (message, run, true)
            }
            cacheKey = key
        }
        let token = CallbackToken()
        let (message, run) = try await store.createSend(
            thread: thread, owner: owner, content: content, metadata: metadata, timeoutSeconds: runTimeoutSeconds,
            callbackTokenHash: token.hash, cacheKey: cacheKey
        )
        do {
            try await publisher.publish(
                [
                    .messageUpdate(.init(threadID: thread, runID: run.id, message: message)),
                    .runStatus(.init(threadID: thread, runID: run.id, status: .queued)),
                ],
                thread: thread
            )
        } catch {
            try? await store.discardSend(run: run.id)
            throw error
        }
        Counter(label: "herald_sends_total").increment()
        if cacheKey != nil { ResponseCache.count(.miss) }
        openRuns.remember(run.id, .init(thread: thread, assistantMessageID: run.assistantMessageID, callbackTokenHash: token.hash))
        let request = AgentRunRequest(
            thread: thread, run: run.id, assistantMessageID: run.assistantMessageID, userMessage: message,
            callbackURL: "\(callbackBase)/webhook/chat-response?run_id=\(run.id.text)&token=\(token.value)"
        )
        // The trigger runs after this request's task is gone: it carries the send's trace context explicitly.
        let traceContext = InstrumentationContext.current ?? .topLevel
        jobs.submit { [self] in await trigger(request, traceContext: traceContext) }
        return (message, run, false)
    }

    /// A send answered from the response cache: stored with a run that is `completed` at once, and published as an
    /// engine run's frames (`running`, the reply's deltas, the reply, `completed`), marked `cached`, in one script.
    private func sendCached(
        _ reply: String, thread: UUID, owner: String, content: String, metadata: JSONValue
    ) async throws -> (ChatMessage, ChatRun) {
        let stored = try await store.createCachedSend(thread: thread, owner: owner, content: content, metadata: metadata, reply: reply)
        let run = stored.run
        var leading: [StreamEvent] = [
            .messageUpdate(.init(threadID: thread, runID: run.id, message: stored.message)),
            .runStatus(.init(threadID: thread, runID: run.id, status: .running, cached: true)),
        ]
        for (index, chunk) in ResponseCache.chunks(of: reply).enumerated() {
            leading.append(.delta(.init(threadID: thread, runID: run.id, messageID: run.assistantMessageID, index: index, delta: chunk, cached: true)))
        }
        do {
            try await publishFinal(run, message: stored.reply, cached: true, leading: leading)
        } catch {
            try? await store.discardSend(run: run.id)
            throw error
        }
        Counter(label: "herald_sends_total").increment()
        return (stored.message, run)
    }

    /// How a trigger ended, the `outcome` of `herald_agent_trigger_duration_seconds`.
    enum TriggerOutcome: String {
        case accepted
        case rejected
        case unauthorized
        case unreachable
        case cancelled
    }

    /// Delivers the run to the engine, retrying connect errors, 429 and 5xx with backoff; when that fails the
    /// run is `failed` and the stream gets an `error` frame. One client span covers every attempt; the engine gets
    /// its `traceparent`.
    func trigger(_ request: AgentRunRequest, traceContext: InstrumentationContext = .topLevel) async {
        let start = ContinuousClock.now
        let span = startSpan("engine trigger", context: traceContext, ofKind: .client)
        span.attributes["herald.run_id"] = request.run.text
        var engineRequest = request
        if let traceparent = span.context.traceparent {
            // An engine that does not propagate trace context still calls this URL back: its webhooks join the trace.
            engineRequest.callbackURL += "&traceparent=\(traceparent)"
        }
        var curlRequest = adapter.request(for: engineRequest)
        curlRequest.addTraceHeaders(of: span.context)
        let outcome: TriggerOutcome
        let failure: ErrorDetail?
        var acceptedResponse: CurlResponse?
        do {
            let response = try await http.execute(curlRequest, retrying: retryPolicy)
            span.attributes["http.response.status_code"] = response.status
            switch response.status {
            case 200..<300:
                (outcome, failure) = (.accepted, nil)
                acceptedResponse = response
            case 401, 403:
                outcome = .unauthorized
                failure = ErrorDetail(
                    code: "agent_unauthorized", message: "the engine refused Herald's credentials (HTTP \(response.status)); check AGENT_API_KEY"
                )
            default:
                (outcome, failure) = (.rejected, ErrorDetail(code: "agent_rejected", message: "the engine answered HTTP \(response.status)"))
            }
        } catch is CancellationError {
            (outcome, failure) = (.cancelled, nil)
        } catch {
            let message = (error as? CurlError)?.message ?? "\(error)"
            (outcome, failure) = (.unreachable, ErrorDetail(code: "agent_unreachable", message: "the engine could not be reached: \(message)"))
        }
        span.attributes["herald.trigger.outcome"] = outcome.rawValue
        if failure != nil { span.setStatus(.init(code: .error)) }
        span.end()
        Timer(label: "herald_agent_trigger_duration_seconds", dimensions: [("outcome", outcome.rawValue)]).record(since: start)
        if let acceptedResponse {
            do {
                try await recordAccepted(request, engineRunID: adapter.engineRunID(from: acceptedResponse), traceContext: span.context)
            } catch is CancellationError {
                return
            } catch {
                // The run reached the engine; only recording that failed. The timeout sweeper settles the run.
                logger.warning("recording a started run failed", metadata: ["run": "\(request.run.text)", "error": "\(error)"])
            }
        }
        guard let failure else { return }
        Counter(label: "herald_agent_trigger_failures_total").increment()
        logger.warning("engine trigger failed", metadata: ["run": "\(request.run.text)", "error": "\(failure.message)"])
        do {
            try await InstrumentationContext.$current.withValue(traceContext) {
                try await finish(runID: request.run, status: .failed, reply: nil, error: failure)
            }
        } catch {
            logger.warning("recording a failed run failed; the sweeper will retry", metadata: ["run": "\(request.run.text)", "error": "\(error)"])
        }
    }

    /// The engine took the run: it is `running` from now on (unless a result already arrived).
    private func recordAccepted(_ request: AgentRunRequest, engineRunID: String?, traceContext: InstrumentationContext) async throws {
        guard try await store.markRunning(request.run, engineRunID: engineRunID) else { return }
        if let streamJoins, let engineRunID {
            streamJoins.join(.init(request: request, engineRunID: engineRunID)) { [store] in
                (try? await store.run(request.run))?.status.isFinal ?? true
            }
        }
        try await InstrumentationContext.$current.withValue(traceContext) {
            try await publisher.publishRunning(request.run, thread: request.thread)
        }
    }

    // MARK: Webhooks

    public enum WebhookOutcome: String, Sendable {
        case accepted
        /// A repeated delivery of a result or delta already handled: nothing stored or published.
        case duplicate
        /// A delta or status for a run that has already ended.
        case ignored
    }

    public func handle(_ event: WebhookEvent) async throws -> WebhookOutcome {
        switch event {
        case .final(let reference, let status, let reply, let error):
            let run = try await resolve(reference)
            return try await finish(runID: run.id, status: status, reply: reply, error: error)
        case .delta(let reference, let index, let text):
            guard let (runID, run) = try await openRun(reference) else { return .ignored }
            let delta = StreamEvent.Delta(threadID: run.thread, runID: runID, messageID: run.assistantMessageID, index: index ?? 0, delta: text)
            return outcome(of: try await publisher.publishDelta(delta, index: index), run: runID)
        case .status(let reference, let status):
            let run = try await resolve(reference)
            guard status == .running, try await store.markRunning(run.id, engineRunID: reference.engineRunID) else { return .ignored }
            try await publisher.publishRunning(run.id, thread: run.threadID)
            return .accepted
        }
    }

    /// `handle` without suspending, for a webhook answered on its event loop: an indexed delta of a run this node
    /// knows to be open, published at once if Redis is connected. nil for anything else, which takes `handle`'s way;
    /// so may a failed future (see `FramePublisher.publishDeltaNow`).
    public func handleNow(_ event: WebhookEvent) -> EventLoopFuture<WebhookOutcome>? {
        guard case .delta(let reference, let index?, let text) = event, let runID = reference.runID,
              let run = openRuns.run(runID), reference.threadID == nil || reference.threadID == run.thread
        else { return nil }
        let delta = StreamEvent.Delta(threadID: run.thread, runID: runID, messageID: run.assistantMessageID, index: index, delta: text)
        guard let published = publisher.publishDeltaNow(delta, index: index) else { return nil }
        return published.map { self.outcome(of: $0, run: runID) }
    }

    private func outcome(of published: FramePublisher.DeltaOutcome, run: UUID) -> WebhookOutcome {
        switch published {
        case .published: return .accepted
        case .duplicate: return .duplicate
        case .runEnded:
            openRuns.forget(run)
            return .ignored
        }
    }

    /// The open run a delta is for: from memory when this node knows it, else from PostgreSQL (nil: it has ended).
    private func openRun(_ reference: RunReference) async throws -> (UUID, OpenRunCache.Run)? {
        if let id = reference.runID, let known = openRuns.run(id) {
            if let thread = reference.threadID, thread != known.thread, reference.engineRunID == nil {
                throw WebhookDecodingError.invalid("thread_id does not match the run's thread")
            }
            return (id, known)
        }
        let run = try await resolve(reference)
        guard !run.status.isFinal else { return nil }
        let open = OpenRunCache.Run(thread: run.threadID, assistantMessageID: run.assistantMessageID)
        openRuns.remember(run.id, open)
        return (run.id, open)
    }

    /// What a callback token is checked against (see `ChatStore.callbackGrant`), from memory for runs this node
    /// knows to be open.
    public func callbackGrant(run: UUID) async throws -> (tokenHash: String?, thread: UUID, acceptsResults: Bool)? {
        if let known = openRuns.run(run), let hash = known.callbackTokenHash {
            return (hash, known.thread, true)
        }
        guard let grant = try await store.callbackGrant(run: run) else { return nil }
        if grant.isOpen {
            openRuns.remember(run, .init(thread: grant.thread, assistantMessageID: grant.assistantMessageID, callbackTokenHash: grant.tokenHash))
        }
        return (grant.tokenHash, grant.thread, grant.acceptsResults)
    }

    private func resolve(_ reference: RunReference) async throws -> ChatRun {
        var run: ChatRun?
        if let id = reference.runID {
            run = try await store.run(id)
        } else if let engineRunID = reference.engineRunID {
            run = try await store.run(engineRunID: engineRunID)
        }
        guard let run else { throw NotFound(what: "run") }
        if let thread = reference.threadID, thread != run.threadID, reference.engineRunID == nil {
            throw WebhookDecodingError.invalid("thread_id does not match the run's thread")
        }
        return run
    }

    /// Final status, stored once and published once, whoever gets here first (webhook, retry, sweeper).
    @discardableResult
    func finish(runID: UUID, status: RunStatus, reply: String?, error: ErrorDetail?) async throws -> WebhookOutcome {
        let outcome: WebhookOutcome
        let run: ChatRun, message: ChatMessage?, cacheKey: String?
        let result = try await store.finalize(run: runID, status: status, reply: reply, error: error)
        openRuns.forget(runID)
        // No delta may follow the final message: this node's join of the run ends before the final frames go out,
        // after relaying what the engine streamed before a completed result.
        await streamJoins?.stop(runID, grace: status == .completed ? .seconds(2) : .zero)
        switch result {
        case .finalized(let finalRun, let reply, let key):
            (run, message, outcome, cacheKey) = (finalRun, reply, .accepted, key)
            countFinished(finalRun)
        case .alreadyFinal(let finalRun, let reply):
            (run, message, outcome, cacheKey) = (finalRun, reply, .duplicate, nil)
        }
        try await publishFinal(run, message: message)
        if run.status == .completed, let cacheKey, let reply = message?.content, !reply.isEmpty, let responseCache {
            do {
                try await responseCache.store(reply, key: cacheKey)
            } catch {
                // The reply is stored and published; only a later repeat of the question misses.
                logger.warning("caching a reply failed", metadata: ["run": "\(run.id.text)", "error": "\(error)"])
            }
        }
        return outcome
    }

    private func countFinished(_ run: ChatRun) {
        Counter(label: "herald_runs_finished_total", dimensions: [("status", run.status.rawValue)]).increment()
    }

    /// Publishes a final run's frames, after `leading` ones, if nobody has yet; gives the claim back if Redis is
    /// unavailable. A node that dies in between leaves a claim that expires, so the sweeper publishes the run after all.
    /// `cached`: the reply came from the response cache, and its frames say so.
    func publishFinal(_ run: ChatRun, message: ChatMessage?, cached: Bool = false, leading: [StreamEvent] = []) async throws {
        guard try await store.claimPublication(run: run.id) else { return }
        let cachedMark: Bool? = cached ? true : nil
        var events = leading
        if run.status == .completed, let message {
            events.append(.messageUpdate(.init(threadID: run.threadID, runID: run.id, message: message, cached: cachedMark)))
        } else {
            let error = run.error ?? ErrorDetail(code: "run_\(run.status.rawValue)", message: "the run ended with status \(run.status.rawValue)")
            events.append(.error(.init(threadID: run.threadID, runID: run.id, error: error)))
        }
        events.append(.runStatus(.init(threadID: run.threadID, runID: run.id, status: run.status, cached: cachedMark)))
        do {
            try await publisher.publish(events, thread: run.threadID, endingRun: run.id)
        } catch {
            try? await store.releasePublication(run: run.id)
            throw error
        }
        try await store.markPublished(run: run.id)
    }

    // MARK: Threads

    public func deleteThread(_ thread: UUID, owner: String) async throws {
        guard try await !deleteThreads([thread], owner: owner).isEmpty else { throw NotFound(what: "thread") }
    }

    /// Deletes those of `threads` that are the owner's (others' and missing ones alike are left out of the answer),
    /// then publishes `thread_deleted` on each deleted thread.
    public func deleteThreads(_ threads: [UUID], owner: String) async throws -> Set<UUID> {
        let deleted = try await store.deleteThreads(threads, owner: owner)
        await announceDeleted(deleted)
        return deleted
    }

    /// Deletes the owner's threads without messages, publishing `thread_deleted` on each; returns them, newest first.
    public func deleteEmptyThreads(owner: String) async throws -> [UUID] {
        let deleted = try await store.deleteEmptyThreads(owner: owner)
        await announceDeleted(deleted)
        return deleted
    }

    /// `thread_deleted` on each thread, concurrently. The threads are gone whatever Redis says: a failed publish is
    /// logged (open streams then end when their client reconnects and gets 404).
    private func announceDeleted(_ threads: some Collection<UUID>) async {
        await withTaskGroup(of: Void.self) { group in
            for thread in threads {
                group.addTask { [publisher, logger] in
                    do {
                        try await publisher.publish([.threadDeleted(.init(threadID: thread))], thread: thread)
                    } catch {
                        logger.warning(
                            "thread deleted but thread_deleted could not be published", metadata: ["thread": "\(thread.text)", "error": "\(error)"]
                        )
                    }
                }
            }
        }
    }

    // MARK: Sweeper

    /// One pass of the safety net: open runs past their deadline become `timed_out`, and final runs whose frames
    /// never reached the stream (Redis was down, a node died mid-way) are published.
    public func sweep() async {
        do {
            for run in try await store.expireOverdueRuns() {
                countFinished(run)
                openRuns.forget(run.id)
                await streamJoins?.stop(run.id)
                try await publishFinal(run, message: nil)
            }
            for (run, message) in try await store.unpublishedFinalRuns(graceSeconds: 5) {
                try await publishFinal(run, message: message)
            }
        } catch {
            logger.debug("sweep incomplete; next pass retries", metadata: ["error": "\(error)"])
        }
    }
}
