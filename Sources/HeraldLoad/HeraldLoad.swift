import ArgumentParser
import CEpoll
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// `herald-load`: load against a running Herald, measured from the outside. See docs/benchmarks.md.
@main
struct HeraldLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald-load",
        abstract: "Load generator for a running Herald: SSE fan-out of native delta webhooks, or idle connections.",
        discussion: """
            Herald's /chats routes need a user token (--token; `herald token --user NAME` prints one) and its \
            webhooks a credential: a Standard Webhooks signature (--webhook-auth signed, with the server's \
            HERALD_WEBHOOK_SECRET as --webhook-secret or in the environment) or the run's callback token, read \
            from the demo agent's GET /runs (--webhook-auth token --agent-url ...).

            Default mode: creates a thread (--threads: several) and a run on each (a send with "[[silent]]", which the demo agent never \
            answers; give the server a large HERALD_RUN_TIMEOUT_SECONDS), opens --subscribers SSE streams on the \
            thread, then posts --webhooks native delta webhooks (POST /webhook/chat-response) from --concurrency \
            keep-alive connections, paced at --rate per second or as fast as they go (--rate 0). Every delta \
            carries its index and the send time; every subscriber checks it gets each accepted index exactly \
            once and records publish-to-receive latency.

            --connections-only: opens --subscribers idle streams (over --threads threads), holds them \
            --hold-seconds and reports Herald's RSS per connection (needs --pid).

            Plain pub/sub (--subscribe-path and --publish-path): the same measurement against any hub, Nchan \
            say, for a side-by-side comparison: subscribers GET the subscribe path (open once the 200 head is in), \
            deltas are POSTed to the publish path as the data of Herald's delta frame, {"delta": \
            "<index>:<send time>:<padding>", "index": …, "message_id": …, "run_id": …, "thread_id": …} with \
            made-up ids, and event name delta (X-EventSource-Event), so both hubs deliver the same frames (any 2xx \
            is accepted), and read from any event's data. No user token or webhook credential is used. --pid-tree \
            sums CPU and RSS over the server's process tree (nginx's master and its workers).

            The last line of output is `RESULT key=value ...` for scripts. Exit status 1 when a frame was \
            missing or duplicated, a webhook was not accepted, or a stream closed early.
            """
    )

    @Option(help: "Herald's base URL (plain http).") var url = "http://127.0.0.1:8080"
    @Option(help: "User token (JWT) for the /chats routes; default: $HERALD_LOAD_TOKEN.") var token: String?
    @Option(help: "How webhooks authenticate: signed, token (the run's callback URL from the demo agent) or none.")
    var webhookAuth: WebhookAuthMode = .signed
    @Option(help: "With --webhook-auth signed: the whsec_ secret; default: $HERALD_WEBHOOK_SECRET.") var webhookSecret: String?
    @Option(help: "With --webhook-auth token: the demo agent, whose GET /runs lists callback URLs.")
    var agentURL = "http://127.0.0.1:8090"
    @Option(help: "SSE subscribers (all on one thread unless --connections-only --threads).") var subscribers = 100
    @Option(help: "Delta webhooks to post (to each thread, with --threads).") var webhooks = 2000
    @Option(help: "Webhooks per second; 0: as fast as --concurrency allows.") var rate: Double = 0
    @Option(help: "Webhook requests in flight, one keep-alive connection each.") var concurrency = 8
    @Option(help: "Threads of this tool: NIO event loops for the senders and WebSocket subscribers, and as many reading the event streams.") var eventLoops = 2
    @Option(help: "Padding bytes in each delta's text.") var payloadBytes = 64
    @Option(help: "Herald's pid: its RSS (VmRSS) and CPU time before and after.") var pid: Int32?
    @Option(help: "Redis server's pid: its CPU time during the measurement.") var redisPid: Int32?
    @Option(help: "PostgreSQL postmaster's pid: CPU time of it and its backends during the measurement.") var postgresPid: Int32?
    @Flag(help: "Hold idle SSE connections and report RSS per connection.") var connectionsOnly = false
    @Option(help: "Threads (plain mode: channels) the subscribers are spread over; each gets --webhooks deltas.")
    var threads = 1
    @Option(help: "With --connections-only: seconds to hold the connections before measuring.") var holdSeconds: Double = 2
    @Option(help: "Seconds to wait for frames still on their way after the last webhook's answer.") var drainTimeout: Double = 30
    @Option(help: "Connections opened concurrently.") var connectBatch = 50
    @Option(help: "Label put first on the RESULT line.") var label = "-"
    @Flag(help: "Keep the thread(s) instead of deleting them at the end.") var keepThreads = false
    @Option(help: "Plain pub/sub mode: the path subscribers GET (text/event-stream).") var subscribePath: String?
    @Option(help: "Plain pub/sub mode: the path deltas are POSTed to.") var publishPath: String?
    @Flag(help: "--pid is the root of a process tree: CPU and RSS are summed over it and its children.") var pidTree = false
    @Flag(help: "Subscribers read Herald's WebSocket (GET /ws, one thread per socket) instead of its SSE streams.") var webSocket = false

    func validate() throws {
        guard (0...100_000).contains(subscribers) else { throw ValidationError("--subscribers must be 0…100000") }
        guard (1...10_000_000).contains(webhooks) else { throw ValidationError("--webhooks must be 1…10000000") }
        guard rate >= 0, rate.isFinite else { throw ValidationError("--rate must be ≥ 0") }
        guard (1...1024).contains(concurrency) else { throw ValidationError("--concurrency must be 1…1024") }
        guard (1...64).contains(eventLoops) else { throw ValidationError("--event-loops must be 1…64") }
        guard (0...60_000).contains(payloadBytes) else { throw ValidationError("--payload-bytes must be 0…60000") }
        guard (1...10_000).contains(threads) else { throw ValidationError("--threads must be 1…10000") }
        guard (0...3600).contains(holdSeconds) else { throw ValidationError("--hold-seconds must be 0…3600") }
        guard drainTimeout > 0, drainTimeout <= 3600 else { throw ValidationError("--drain-timeout must be in (0, 3600]") }
        guard (1...1000).contains(connectBatch) else { throw ValidationError("--connect-batch must be 1…1000") }
        if connectionsOnly && subscribers == 0 { throw ValidationError("--connections-only needs --subscribers > 0") }
        if threads > 1 && !connectionsOnly && webhookAuth == .token && subscribePath == nil {
            throw ValidationError("--webhook-auth token takes one thread")
        }
        if (subscribePath == nil) != (publishPath == nil) { throw ValidationError("--subscribe-path and --publish-path go together") }
        if webSocket && subscribePath != nil { throw ValidationError("--web-socket is Herald's own; plain mode subscribes over SSE") }
        for path in [subscribePath, publishPath].compactMap(\.self) where !path.hasPrefix("/") {
            throw ValidationError("paths start with /, got \(path)")
        }
    }

    func run() async throws {
        let target = try Target(url: url)
        let environment = ProcessInfo.processInfo.environment
        var signer: WebhookSigner?
        var agent: Target?
        switch subscribePath == nil ? webhookAuth : .none {
        case .signed:
            guard let secret = webhookSecret ?? environment["HERALD_WEBHOOK_SECRET"], !secret.isEmpty else {
                throw ValidationError("--webhook-auth signed needs --webhook-secret or HERALD_WEBHOOK_SECRET")
            }
            // The server takes several secrets while rotating; the first one signs, as the demo agent does.
            let first = secret.split(whereSeparator: { $0 == "," || $0.isWhitespace }).first.map(String.init) ?? secret
            signer = try WebhookSigner(secret: first)
        case .token:
            agent = try Target(url: agentURL)
        case .none:
            break
        }
        let token = self.token ?? environment["HERALD_LOAD_TOKEN"]
        // As a node does: a descriptor table that grew during the run would stall the tool at each doubling.
        cepoll_grow_descriptor_table(subscribers + concurrency + 256)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: eventLoops)
        let passed: Result<Bool, any Error>
        do {
            let context = LoadContext(options: self, target: target, token: token, signer: signer, agent: agent, group: group)
            passed = .success(try await connectionsOnly ? context.connections() : context.deltas())
        } catch {
            passed = .failure(error)
        }
        try? await group.shutdownGracefully()
        switch passed {
        case .success(true): return
        case .success(false): throw ExitCode(1)
        case .failure(let error):
            FileHandle.standardError.write(Data("herald-load: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// One invocation's settings and connections.
struct LoadContext: Sendable {
    let subscribers: Int
    let webhooks: Int
    let rate: Double
    let concurrency: Int
    let payloadBytes: Int
    let pid: Int32?
    let probes: Probes
    let threads: Int
    let holdSeconds: Double
    let drainTimeout: Double
    let connectBatch: Int
    /// Threads reading the event streams (`--event-loops`, as many as NIO's loops).
    let eventLoops: Int
    let label: String
    let keepThreads: Bool
    let target: Target
    /// `Authorization: Bearer …` for every /chats request, streams included.
    let userHeaders: [(String, String)]
    let webhookAuth: WebhookAuthMode
    let signer: WebhookSigner?
    let agent: Target?
    /// Plain pub/sub mode: where subscribers read and deltas are posted.
    let plain: (subscribe: String, publish: String)?
    let transport: Subscriber.Transport
    let group: MultiThreadedEventLoopGroup

    init(
        options: HeraldLoad, target: Target, token: String?, signer: WebhookSigner?, agent: Target?,
        group: MultiThreadedEventLoopGroup
    ) {
        userHeaders = token.map { [("Authorization", "Bearer \($0)")] } ?? []
        webhookAuth = options.webhookAuth
        self.signer = signer
        self.agent = agent
        subscribers = options.subscribers
        webhooks = options.webhooks
        rate = options.rate
        concurrency = options.concurrency
        payloadBytes = options.payloadBytes
        pid = options.pid
        probes = Probes(herald: options.pid, heraldIsTree: options.pidTree, redis: options.redisPid, postgres: options.postgresPid)
        if let subscribe = options.subscribePath, let publish = options.publishPath {
            plain = (subscribe, publish)
            transport = .plain
        } else {
            plain = nil
            transport = options.webSocket ? .webSocket : .sse
        }
        threads = options.threads
        holdSeconds = options.holdSeconds
        drainTimeout = options.drainTimeout
        connectBatch = options.connectBatch
        eventLoops = options.eventLoops
        label = options.label
        keepThreads = options.keepThreads
        self.target = target
        self.group = group
    }

    private func log(_ text: String) {
        FileHandle.standardError.write(Data("herald-load: \(text)\n".utf8))
    }

    // MARK: Set-up

    private func createThread() async throws -> String {
        let reply = try await HTTP.oneShot(
            .POST, "/chats", json: #"{"title":"herald-load"}"#, headers: userHeaders, target: target, group: group
        )
        guard reply.status == .created, let id = jsonString(reply.body, "id") else {
            throw LoadError("POST /chats answered \(reply.status.code): \(reply.text)")
        }
        return id
    }

    /// A run that stays open: the demo agent never answers `[[silent]]`.
    private func startRun(on thread: String) async throws -> String {
        let reply = try await HTTP.oneShot(
            .POST, "/chats/\(thread)/send", json: #"{"content":"[[silent]] load"}"#, headers: userHeaders, target: target,
            group: group
        )
        guard reply.status == .accepted, let id = jsonString(reply.body, "run", "id") else {
            throw LoadError("POST /chats/\(thread)/send answered \(reply.status.code): \(reply.text)")
        }
        return id
    }

    private func deleteThreads(_ ids: [String]) async {
        guard !keepThreads else { return }
        for id in ids {
            do {
                let reply = try await HTTP.oneShot(.DELETE, "/chats/\(id)", json: nil, headers: userHeaders, target: target, group: group)
                if reply.status != .noContent { log("DELETE /chats/\(id) answered \(reply.status.code)") }
            } catch {
                log("DELETE /chats/\(id) failed: \(error)")
            }
        }
    }

    /// Where each subscriber reads: a thread's stream, or the plain mode's subscribe path.
    private func streamPaths(threads: [String]) -> [String] {
        if let plain { return [plain.subscribe] }
        return threads.map { "/chats/sse/\($0)" }
    }

    /// Opens `subscribers` streams over `paths` (subscriber `i` reads `paths[i % paths.count]`), `connectBatch`
    /// at a time, each counted open once it is ready (Herald: `: connected`; plain mode: the 200 head; a
    /// WebSocket: `subscribed`); with how long each took from its connect. Event streams on plain sockets,
    /// WebSockets on NIO channels.
    private func openSubscribers(paths: [String], expected: Int, progress: Progress) async throws -> (Subscribers, [Int64]) {
        if transport != .webSocket {
            let opened = try await PlainSocketStreams.open(
                target, paths: paths, headers: userHeaders, plain: transport == .plain, count: subscribers, batch: connectBatch,
                expected: expected, progress: progress
            )
            return (.sockets(opened.streams), opened.openNanos)
        }
        var opened: [Subscriber] = []
        var openNanos: [Int64] = []
        openNanos.reserveCapacity(subscribers)
        opened.reserveCapacity(subscribers)
        var next = 0
        while next < subscribers {
            let range = next..<min(subscribers, next + connectBatch)
            let batch = await withTaskGroup(of: Result<(Subscriber, Int64), any Error>.self) { tasks in
                for index in range {
                    let path = paths[index % paths.count]
                    tasks.addTask { [target, userHeaders, group] in
                        do {
                            let start = Now.nanos()
                            let subscriber = try await Subscriber.openWebSocket(
                                target, path: path, source: index % paths.count, headers: userHeaders, expected: expected,
                                progress: progress, group: group
                            )
                            return .success((subscriber, Int64(Now.nanos() - start)))
                        } catch {
                            return .failure(error)
                        }
                    }
                }
                var results: [Result<(Subscriber, Int64), any Error>] = []
                for await result in tasks { results.append(result) }
                return results
            }
            var failure: (any Error)?
            for result in batch {
                switch result {
                case .success(let (subscriber, nanos)):
                    opened.append(subscriber)
                    openNanos.append(nanos)
                case .failure(let error): failure = failure ?? error
                }
            }
            if let failure {
                for subscriber in opened { await subscriber.close() }
                throw LoadError("opening subscriber \(opened.count + 1) of \(subscribers) failed: \(failure)")
            }
            next = range.upperBound
        }
        return (.webSockets(opened), openNanos)
    }

    // MARK: Deltas

    func deltas() async throws -> Bool {
        if let plain {
            // One channel, or one per --threads, each with its own publish path.
            let channels = threads == 1 ? [plain] : (0..<threads).map { (plain.subscribe + "x\($0)", plain.publish + "x\($0)") }
            return try await deltas(sources: channels.map { DeltaSource(streamPath: $0.0, runID: "", webhook: WebhookTarget(uri: $0.1, signer: nil, plain: true)) })
        }
        var threadIDs: [String] = []
        do {
            var sources: [DeltaSource] = []
            for _ in 0..<threads {
                let thread = try await createThread()
                threadIDs.append(thread)
                sources.append(try await deltaSource(thread: thread))
            }
            let passed = try await deltas(sources: sources)
            await deleteThreads(threadIDs)
            return passed
        } catch {
            await deleteThreads(threadIDs)
            throw error
        }
    }

    /// A thread with an open run, and where its deltas go.
    private func deltaSource(thread: String) async throws -> DeltaSource {
        let runID = try await startRun(on: thread)
        let webhook: WebhookTarget
        switch webhookAuth {
        case .signed, .none:
            webhook = WebhookTarget(uri: "/webhook/chat-response", signer: signer)
        case .token:
            guard let agent else { throw LoadError("--webhook-auth token needs --agent-url") }
            webhook = WebhookTarget(uri: try await WebhookTarget.callbackURI(agent: agent, thread: thread, group: group), signer: nil)
        }
        return DeltaSource(streamPath: "/chats/sse/\(thread)", runID: runID, webhook: webhook)
    }

    /// Each source gets `webhooks` deltas (numbered 0..<webhooks in it); its subscribers must get each once.
    private func deltas(sources: [DeltaSource]) async throws -> Bool {
        let rssStart = probes.serverRSSKiB()

        let progress = Progress()
        let openStart = Now.nanos()
        let (streams, _) = try await openSubscribers(paths: sources.map(\.streamPath), expected: webhooks, progress: progress)
        try streams.startReading(threads: eventLoops)
        let openSeconds = Double(Now.nanos() - openStart) / 1e9
        let rssSubscribed = probes.serverRSSKiB()
        log("\(streams.count) subscribers connected in \(String(format: "%.2f", openSeconds)) s; posting \(webhooks * sources.count) webhooks")

        var senders: [HTTP.Connection] = []
        for _ in 0..<concurrency {
            senders.append(try await HTTP.connect(target, group: group))
        }
        let padding = String(repeating: "x", count: payloadBytes)
        let host = target.hostHeader

        let loadAverage = ProcessProbe.loadAverage()
        let cpuBefore = CPUSample.take(probes)
        let start = Now.nanos()
        let schedule = Schedule(total: webhooks * sources.count, rate: rate > 0 ? rate : nil, start: .now)
        let sent = try await withThrowingTaskGroup(of: SenderReport.self) { tasks in
            for connection in senders {
                tasks.addTask {
                    try await Sender.run(on: connection, schedule: schedule, sources: sources, padding: padding, host: host)
                }
            }
            var total = SenderReport()
            for try await report in tasks { total.merge(report) }
            return total
        }

        // Drain: until every subscriber has every index, or nothing arrived for 3 s, or the drain timeout.
        let drainDeadline = Now.nanos() + UInt64(drainTimeout * 1e9)
        var lastFrames = progress.frames.load(ordering: .relaxed)
        var lastChange = Now.nanos()
        var drainOutcome = "complete"
        while progress.complete.load(ordering: .relaxed) + progress.closedEarly.load(ordering: .relaxed) < streams.count {
            let now = Now.nanos()
            let frames = progress.frames.load(ordering: .relaxed)
            if frames != lastFrames {
                (lastFrames, lastChange) = (frames, now)
            } else if now - lastChange > 3_000_000_000 {
                drainOutcome = "idle for 3 s"
                break
            }
            if now > drainDeadline {
                drainOutcome = "drain timeout"
                break
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        let cpu = CPUSample.take(probes) - cpuBefore
        let rssEnd = probes.serverRSSKiB()

        var accepted = [[Bool]](repeating: [Bool](repeating: false, count: webhooks), count: sources.count)
        for global in sent.accepted {
            let (source, index) = Schedule.place(global, sources: sources.count)
            accepted[source][index] = true
        }
        let results = try await streams.results(accepted: accepted)
        await streams.closeAll()

        // Figures.
        let acceptedCount = sent.accepted.count
        let failedCount = sent.failed.values.reduce(0, +)
        let sendSeconds = Double(max(sent.lastResponse, start) - start) / 1e9
        let frames = results.reduce(0) { $0 + $1.frames }
        let lastFrame = results.map(\.lastReceive).max() ?? start
        let deliverSeconds = Double(max(lastFrame, start) - start) / 1e9
        let missing = results.reduce(0) { $0 + $1.missing }
        let duplicates = results.reduce(0) { $0 + $1.duplicates }
        let unexpected = results.reduce(0) { $0 + $1.unexpected }
        let malformed = results.reduce(0) { $0 + $1.malformed }
        let gappy = results.filter { $0.missing > 0 }.count
        let closedEarly = results.filter(\.closedEarly).count
        var allLatencies: [Int64] = []
        allLatencies.reserveCapacity(frames)
        for result in results { allLatencies += result.latencies }
        let latency = Percentiles(allLatencies)
        let roundTrip = Percentiles(sent.roundTrips)
        let webhooksPerSecond = sendSeconds > 0 ? Double(acceptedCount) / sendSeconds : nil
        let framesPerSecond = deliverSeconds > 0 ? Double(frames) / deliverSeconds : nil

        var report = Report()
        report.line(
            "scenario: \(streams.count) subscriber(s) over \(sources.count) thread(s), \(webhooks) delta webhooks each, "
                + "\(rate > 0 ? String(format: "%.0f/s", rate) : "max rate"), concurrency \(concurrency), "
                + "payload \(payloadBytes) B, webhooks \(plain == nil ? webhookAuth.rawValue : "plain")"
        )
        report.line(
            String(
                format: "webhooks: %d accepted, %d duplicate, %d ignored, %d failed in %.3f s = %.0f/s accepted",
                acceptedCount, sent.duplicate, sent.ignored, failedCount, sendSeconds, webhooksPerSecond ?? 0
            ) + "; answer p50 \(roundTrip.ms(0.5)) ms, p99 \(roundTrip.ms(0.99)) ms"
        )
        if let firstError = sent.firstError { report.line("  first webhook not accepted: \(firstError)") }
        report.line(
            String(format: "frames: %d delivered in %.3f s = %.0f/s (all subscribers)", frames, deliverSeconds, framesPerSecond ?? 0)
                + "; drain: \(drainOutcome)"
        )
        report.line(
            "latency publish→receive (ms): p50 \(latency.ms(0.5)), p90 \(latency.ms(0.9)), p99 \(latency.ms(0.99)), "
                + "max \(Percentiles.ms(latency.max)) over \(latency.count) frames"
        )
        report.line(
            "delivery: missing \(missing), duplicate \(duplicates), unexpected \(unexpected), malformed \(malformed); "
                + "subscribers with gaps \(gappy), closed early \(closedEarly)"
        )
        if pid != nil {
            let perWebhook = cpu.herald.map { acceptedCount > 0 ? $0 / Double(acceptedCount) * 1e6 : 0 }
            let perFrame = cpu.herald.map { frames > 0 ? $0 / Double(frames) * 1e6 : 0 }
            report.line(
                "herald: RSS \(formatMiB(rssStart)) before, \(formatMiB(rssSubscribed)) subscribed, \(formatMiB(rssEnd)) after; "
                    + String(
                        format: "CPU %.2f s (%.2f in the kernel) = %.2f cores busy (%.0f µs per webhook, %.1f µs per frame)",
                        cpu.herald ?? 0, cpu.heraldSystem ?? 0, (cpu.herald ?? 0) / max(deliverSeconds, 1e-9), perWebhook ?? 0, perFrame ?? 0
                    )
            )
        }
        report.line(cpu.othersDescription + (loadAverage.map { String(format: "; load average %.2f at the start", $0) } ?? ""))

        report.field("label", label)
        report.field("mode", "deltas")
        report.field("subscribers", streams.count)
        report.field("threads", sources.count)
        report.field("webhooks", webhooks * sources.count)
        report.field("rate", rate, decimals: 0)
        report.field("concurrency", concurrency)
        report.field("payload", payloadBytes)
        report.field("auth", plain == nil ? webhookAuth.rawValue : "plain")
        report.field("accepted", acceptedCount)
        report.field("not_accepted", sent.duplicate + sent.ignored + failedCount)
        report.field("webhooks_per_s", webhooksPerSecond, decimals: 0)
        report.field("frames", frames)
        report.field("frames_per_s", framesPerSecond, decimals: 0)
        report.field("p50_ms", latency.ms(0.5))
        report.field("p90_ms", latency.ms(0.9))
        report.field("p99_ms", latency.ms(0.99))
        report.field("p999_ms", latency.ms(0.999))
        report.field("max_ms", Percentiles.ms(latency.max))
        report.field("answer_p50_ms", roundTrip.ms(0.5))
        report.field("answer_p99_ms", roundTrip.ms(0.99))
        report.field("missing", missing)
        report.field("duplicates", duplicates)
        report.field("unexpected", unexpected)
        report.field("closed_early", closedEarly)
        report.field("herald_cpu_s", cpu.herald, decimals: 2)
        report.field("herald_sys_s", cpu.heraldSystem, decimals: 2)
        report.field("herald_cores", cpu.herald.map { $0 / max(deliverSeconds, 1e-9) }, decimals: 2)
        report.field("herald_us_per_webhook", cpu.herald.map { acceptedCount > 0 ? $0 / Double(acceptedCount) * 1e6 : 0 }, decimals: 0)
        report.field("herald_us_per_frame", cpu.herald.map { frames > 0 ? $0 / Double(frames) * 1e6 : 0 }, decimals: 2)
        report.field("redis_cpu_s", cpu.redis, decimals: 2)
        report.field("postgres_cpu_s", cpu.postgres, decimals: 2)
        report.field("tool_cpu_s", cpu.own, decimals: 2)
        report.field("rss_start_kib", rssStart.map(String.init) ?? "-")
        report.field("rss_subscribed_kib", rssSubscribed.map(String.init) ?? "-")
        report.field("rss_end_kib", rssEnd.map(String.init) ?? "-")
        report.field("loadavg", loadAverage, decimals: 2)
        report.print()

        return acceptedCount == webhooks * sources.count && missing == 0 && duplicates == 0 && unexpected == 0 && malformed == 0 && closedEarly == 0
    }

    // MARK: Idle connections

    func connections() async throws -> Bool {
        if plain != nil { return try await connections(threads: []) }
        var threadIDs: [String] = []
        do {
            for _ in 0..<threads { threadIDs.append(try await createThread()) }
            let passed = try await connections(threads: threadIDs)
            await deleteThreads(threadIDs)
            return passed
        } catch {
            await deleteThreads(threadIDs)
            throw error
        }
    }

    private func connections(threads threadIDs: [String]) async throws -> Bool {
        let progress = Progress()
        let rssBefore = probes.serverRSSKiB()
        let cpuBefore = CPUSample.take(probes)
        let openStart = Now.nanos()
        let (streams, openNanos) = try await openSubscribers(paths: streamPaths(threads: threadIDs), expected: 0, progress: progress)
        let opened = streams.count
        let openSeconds = Double(Now.nanos() - openStart) / 1e9
        let cpuOpen = CPUSample.take(probes) - cpuBefore
        log("\(opened) connections open in \(String(format: "%.2f", openSeconds)) s; holding \(holdSeconds) s")
        try await Task.sleep(for: .seconds(holdSeconds))
        let rssOpen = probes.serverRSSKiB()
        let closedWhileHeld = streams.closedEarly(progress)
        await streams.closeAll()
        try await Task.sleep(for: .seconds(1))
        let rssClosed = probes.serverRSSKiB()

        var perConnection: Double?
        if let rssBefore, let rssOpen, opened > 0 {
            perConnection = Double(rssOpen - rssBefore) / Double(opened)
        }
        var report = Report()
        report.line("scenario: \(opened) idle \(transport == .webSocket ? "WebSocket" : "SSE") connections over \(threadIDs.count) thread(s), held \(holdSeconds) s")
        report.line(
            String(
                format: "opened in %.2f s (%.0f/s, %d at a time); closed early while held: %d",
                openSeconds, Double(opened) / max(openSeconds, 1e-9), connectBatch, closedWhileHeld
            )
        )
        let opens = Percentiles(openNanos)
        report.line(
            "each open, connect to ready: p50 \(opens.ms(0.5)) ms, p99 \(opens.ms(0.99)) ms, max \(Percentiles.ms(opens.max)) ms; "
                + String(format: "load tool CPU to open them %.2f s", cpuOpen.own)
        )
        if pid != nil {
            report.line(
                "herald: RSS \(formatMiB(rssBefore)) before, \(formatMiB(rssOpen)) with the connections, "
                    + "\(formatMiB(rssClosed)) 1 s after closing them; "
                    + (perConnection.map { String(format: "%.1f KiB per connection", $0) } ?? "-")
                    + String(format: "; CPU to open them %.2f s", cpuOpen.herald ?? 0)
            )
        }
        report.field("label", label)
        report.field("mode", "connections")
        report.field("connections", opened)
        report.field("threads", threadIDs.count)
        report.field("open_s", openSeconds, decimals: 2)
        report.field("closed_early", closedWhileHeld)
        report.field("rss_before_kib", rssBefore.map(String.init) ?? "-")
        report.field("rss_open_kib", rssOpen.map(String.init) ?? "-")
        report.field("rss_closed_kib", rssClosed.map(String.init) ?? "-")
        report.field("kib_per_connection", perConnection, decimals: 1)
        report.field("herald_cpu_open_s", cpuOpen.herald, decimals: 2)
        report.field("open_p50_ms", opens.ms(0.5))
        report.field("open_p99_ms", opens.ms(0.99))
        report.field("tool_cpu_open_s", cpuOpen.own, decimals: 2)
        report.print()
        return closedWhileHeld == 0
    }
}

/// A run's open subscribers, whichever way they read.
enum Subscribers {
    case sockets(PlainSocketStreams)
    case webSockets([Subscriber])

    var count: Int {
        switch self {
        case .sockets(let streams): streams.count
        case .webSockets(let subscribers): subscribers.count
        }
    }

    /// Reads every stream's frames from now on (a WebSocket's channel reads them from its open).
    func startReading(threads: Int) throws {
        if case .sockets(let streams) = self { try streams.startReading(threads: threads) }
    }

    /// What each one saw; `accepted[source]` are the indexes its source's webhooks had accepted. Reading stops.
    func results(accepted: [[Bool]]) async throws -> [SubscriberResult] {
        switch self {
        case .sockets(let streams):
            await streams.stopReading()
            return streams.results(accepted: accepted)
        case .webSockets(let subscribers):
            var results: [SubscriberResult] = []
            results.reserveCapacity(subscribers.count)
            for subscriber in subscribers { results.append(try await subscriber.result(accepted: accepted[subscriber.source])) }
            return results
        }
    }

    /// How many the server closed while they were held (idle streams, not read).
    func closedEarly(_ progress: Progress) -> Int {
        switch self {
        case .sockets(let streams): streams.closedByServer()
        case .webSockets: progress.closedEarly.load(ordering: .relaxed)
        }
    }

    func closeAll() async {
        switch self {
        case .sockets(let streams): streams.closeAll()
        case .webSockets(let subscribers): for subscriber in subscribers { await subscriber.close() }
        }
    }
}
