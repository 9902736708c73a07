import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// Hands out webhook indexes 0..<total to the sender connections, and their due times when paced.
final class Schedule: Sendable {
    let total: Int
    /// Webhooks per second; nil: as fast as the connections allow.
    let rate: Double?
    let start: ContinuousClock.Instant
    private let next = Atomic<Int>(0)

    init(total: Int, rate: Double?, start: ContinuousClock.Instant) {
        self.total = total
        self.rate = rate
        self.start = start
    }

    func take() -> Int? {
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return index < total ? index : nil
    }

    /// Webhook `global` of the schedule is delta `index` of source `source`: sources take turns, so every thread
    /// gets its deltas spread over the whole run.
    static func place(_ global: Int, sources: Int) -> (source: Int, index: Int) {
        (global % sources, global / sources)
    }

    func due(_ index: Int) -> ContinuousClock.Instant? {
        guard let rate else { return nil }
        return start.advanced(by: .nanoseconds(Int64((Double(index) * 1e9 / rate).rounded())))
    }
}

struct SenderReport: Sendable {
    var accepted: [Int] = []
    var duplicate = 0
    var ignored = 0
    /// Non-200 answers, by status code.
    var failed: [Int: Int] = [:]
    /// Request written → response read, nanoseconds.
    var roundTrips: [Int64] = []
    var lastResponse: UInt64 = 0
    var firstError: String?

    mutating func merge(_ other: SenderReport) {
        accepted += other.accepted
        duplicate += other.duplicate
        ignored += other.ignored
        failed.merge(other.failed, uniquingKeysWith: +)
        roundTrips += other.roundTrips
        lastResponse = max(lastResponse, other.lastResponse)
        firstError = firstError ?? other.firstError
    }
}

/// Where one thread's (or channel's) deltas go, and where its subscribers read them.
struct DeltaSource: Sendable {
    let streamPath: String
    /// Herald's run on the thread; empty in plain mode.
    let runID: String
    let webhook: WebhookTarget
}

/// One keep-alive connection posting native delta webhooks, one at a time, until the schedule runs out.
enum Sender {
    static func run(
        on connection: HTTP.Connection, schedule: Schedule, sources: [DeltaSource], padding: String, host: String
    ) async throws -> SenderReport {
        try await connection.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            var report = SenderReport()
            while let global = schedule.take() {
                if let due = schedule.due(global), due > .now {
                    try await Task.sleep(until: due, tolerance: .microseconds(100), clock: .continuous)
                }
                let (source, index) = Schedule.place(global, sources: sources.count)
                let webhook = sources[source].webhook, runID = sources[source].runID
                let sent = Now.nanos()
                let delta = "\(index):\(sent):\(padding)"
                let body = ByteBuffer(
                    string: webhook.plain
                        ? PlainDelta.body(delta, index: index)
                        : #"{"run_id":"\#(runID)","event":"delta","index":\#(index),"delta":"\#(delta)"}"#
                )
                let headers = webhook.plain ? PlainDelta.headers : webhook.signer?.headers(index: index, body: body) ?? []
                let reply = try await HTTP.exchange(
                    .POST, webhook.uri, json: body, host: host, headers: headers, inbound: &iterator, outbound: outbound
                )
                let received = Now.nanos()
                report.roundTrips.append(Int64(bitPattern: received &- sent))
                report.lastResponse = received
                if webhook.plain, (200..<300).contains(reply.status.code) {
                    report.accepted.append(global)
                    continue
                }
                guard reply.status == .ok else {
                    report.failed[Int(reply.status.code), default: 0] += 1
                    if report.firstError == nil { report.firstError = "\(reply.status.code) \(reply.text)" }
                    continue
                }
                let text = reply.text
                if text.contains("\"accepted\"") {
                    report.accepted.append(global)
                } else if text.contains("\"duplicate\"") {
                    report.duplicate += 1
                } else {
                    report.ignored += 1
                    if report.firstError == nil { report.firstError = "200 \(text)" }
                }
            }
            return report
        }
    }
}

/// What plain mode publishes: the frame Herald sends for a delta, as a chat app on another hub would publish it, so
/// that both hubs deliver the same frames: Herald's `delta` data (the text, its index, and made-up ids of the
/// message, run and thread, fixed for the run) as the message, and `delta` as its event name (Nchan's
/// `X-EventSource-Event`).
enum PlainDelta {
    static func body(_ delta: String, index: Int) -> String {
        #"{"delta":"\#(delta)","index":\#(index),"message_id":"\#(ids.message)","run_id":"\#(ids.run)","thread_id":"\#(ids.thread)"}"#
    }

    static let headers = [("X-EventSource-Event", "delta")]

    /// Random, in the form of Herald's ids (lower-case UUIDs).
    private static let ids = (
        message: UUID().uuidString.lowercased(), run: UUID().uuidString.lowercased(), thread: UUID().uuidString.lowercased()
    )
}
