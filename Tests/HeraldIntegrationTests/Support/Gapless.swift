import Foundation
import HeraldTestSupport
import Testing

/// Helpers for the gapless-stream tests: native webhooks, a steady delta publisher, reading the Redis log.
extension API {
    /// Posts a native webhook body (JSON) to `/webhook/chat-response`, signed as a fresh delivery.
    func webhook(_ object: [String: Any]) async throws -> TestHTTPResponse {
        try await postWebhook(Array(try JSONSerialization.data(withJSONObject: object)))
    }

    /// Posts a native `delta` webhook for `run`.
    func delta(run: String, index: Int, _ text: String) async throws -> TestHTTPResponse {
        try await webhook(["run_id": run, "event": "delta", "index": index, "delta": text])
    }

    /// The `status` field of a webhook answer (`accepted`, `duplicate`, `ignored`).
    func outcome(_ response: TestHTTPResponse) -> String? {
        (try? json(response))?["status"] as? String
    }

    /// A labelled metric's value, e.g. `metric("herald_sse_disconnects_total", label: "reason=\"slow_consumer\"")`.
    func metric(_ name: String, label: String) async throws -> Double? {
        let response = try await TestHTTPClient.request("GET", "\(base)/metrics")
        for line in response.text.split(separator: "\n") where line.hasPrefix(name + "{") && line.contains(label) {
            return Double(line.split(separator: " ").last ?? "")
        }
        return nil
    }

    func isReady() async -> Bool {
        (try? await TestHTTPClient.request("GET", "\(base)/readyz", timeout: .seconds(2)))?.status == 200
    }
}

/// Posts native delta webhooks for one run from a background task, either at a steady rate (one at a time) or
/// as fast as `concurrency` parallel posters go. Every post must be answered `200 accepted`.
struct DeltaPublisher {
    let task: Task<[String], any Error>

    /// Indexes in order, one post every `interval` (a steady rate, not a burst after a slow post).
    static func steady(api: API, run: String, indexes: Range<Int>, interval: Duration) -> DeltaPublisher {
        DeltaPublisher(task: Task {
            var failures: [String] = []
            let start = ContinuousClock.now
            for (position, index) in indexes.enumerated() {
                try await Task.sleep(until: start + interval * position, clock: .continuous)
                let response = try await api.delta(run: run, index: index, "t\(index) ")
                if response.status != 200 || api.outcome(response) != "accepted" {
                    failures.append("delta \(index): \(response.status) \(response.text)")
                }
            }
            return failures
        })
    }

    /// Indexes spread over `concurrency` posters, each posting its share in order, without pauses.
    static func burst(api: API, run: String, indexes: Range<Int>, concurrency: Int, text: @escaping @Sendable (Int) -> String) -> DeltaPublisher {
        DeltaPublisher(task: Task {
            try await withThrowingTaskGroup(of: [String].self) { group in
                for lane in 0..<concurrency {
                    group.addTask {
                        var failures: [String] = []
                        for index in indexes where index % concurrency == lane {
                            let response = try await api.delta(run: run, index: index, text(index))
                            if response.status != 200 || api.outcome(response) != "accepted" {
                                failures.append("delta \(index): \(response.status) \(response.text)")
                            }
                        }
                        return failures
                    }
                }
                var all: [String] = []
                for try await failures in group { all += failures }
                return all
            }
        })
    }

    static let slowConsumer = #"reason="slow_consumer""#

    /// Publishes 1 MiB rounds of deltas (indexes from 0) until `counter{reason="slow_consumer"}` shows a reader
    /// cut off, and returns how many were published. The kernel buffers megabytes for a socket nobody reads
    /// (send-buffer autotuning, 4 MiB by default on Linux) before Herald's own queue fills.
    static func floodUntilCut(api: API, run: String, counter: String) async throws -> Int {
        let payload = String(repeating: "x", count: 16 * 1024)
        let round = 64
        var total = 0
        var cut = false
        while !cut && total < 16 * round {
            try await burst(api: api, run: run, indexes: total..<(total + round), concurrency: 4) { "\($0):\(payload)" }.finish()
            total += round
            cut = try await api.metric(counter, label: slowConsumer) == 1
        }
        if !cut {
            try await eventually(timeout: .seconds(3), "a slow reader is cut off as a slow consumer") {
                try await api.metric(counter, label: slowConsumer) == 1
            }
        }
        return total
    }

    /// Waits for the last post; records an issue for every post not answered `200 accepted`.
    func finish() async throws {
        let failures = try await task.value
        #expect(failures.isEmpty, "\(failures.prefix(5))")
    }
}

extension Stack {
    /// Every entry id the thread's Redis log holds, oldest first.
    func logIDs(_ thread: String) async throws -> [String] {
        let output = try await redis.command("XRANGE", "sse:thread:\(thread):log", "-", "+")
        return output.split(separator: "\n").map(String.init).filter {
            $0.range(of: #"^\d+-\d+$"#, options: .regularExpression) != nil
        }
    }

    func logLength(_ thread: String) async throws -> Int {
        Int(try await redis.command("XLEN", "sse:thread:\(thread):log")) ?? -1
    }
}

extension SSEEvent {
    /// A delta event's index.
    var deltaIndex: Int? { type == "delta" ? object["index"] as? Int : nil }
}

extension SSEStream {
    /// Waits until a `delta` with `index` has arrived; throws on timeout or when the stream ends first.
    func waitForDelta(_ index: Int, timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        var checked = 0
        while true {
            let events = self.events
            if events[checked...].contains(where: { $0.deltaIndex == index }) { return }
            checked = events.count
            let summary = "\(events.count) event(s), last: \(events.last.map { "\($0.type) \($0.data.prefix(120))" } ?? "none")"
            if isEnded { throw TestHTTPError("stream ended before delta \(index): \(endError ?? "response complete"); \(summary)") }
            if ContinuousClock.now >= deadline { throw TestHTTPError("no delta \(index) within \(timeout); \(summary)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Nil when `got` equals `expected`; otherwise a short account of how they differ (for failure messages that
/// stay readable with hundreds of ids).
func mismatch<T: Hashable>(_ got: [T], _ expected: [T]) -> String? {
    guard got != expected else { return nil }
    let gotSet = Set(got), expectedSet = Set(expected)
    let duplicates = got.count - gotSet.count
    let missing = expected.filter { !gotSet.contains($0) }
    let extra = got.filter { !expectedSet.contains($0) }
    let firstDifference = zip(got, expected).enumerated().first { $0.element.0 != $0.element.1 }
    return "got \(got.count), expected \(expected.count); duplicates \(duplicates); missing \(missing.count) \(missing.prefix(5)); "
        + "unexpected \(extra.count) \(extra.prefix(5)); first difference at "
        + (firstDifference.map { "\($0.offset): \($0.element.0) instead of \($0.element.1)" } ?? "the end")
}
