import Foundation
import Testing

@testable import HeraldCore

@Suite("open-run cache")
struct OpenRunCacheTests {
    let thread = UUID(), reply = UUID()

    @Test("remembers, merges a token hash learnt later, forgets")
    func rememberMergeForget() {
        let cache = OpenRunCache(capacity: 10, lifetime: .seconds(60))
        let run = UUID()
        #expect(cache.run(run) == nil)
        cache.remember(run, .init(thread: thread, assistantMessageID: reply, callbackTokenHash: "h1"))
        cache.remember(run, .init(thread: thread, assistantMessageID: reply))
        #expect(cache.run(run)?.callbackTokenHash == "h1")
        #expect(cache.run(run)?.thread == thread)
        cache.forget(run)
        #expect(cache.run(run) == nil)
    }

    @Test("entries older than a run may live are gone")
    func expiry() async throws {
        let cache = OpenRunCache(capacity: 10, lifetime: .milliseconds(1))
        let run = UUID()
        cache.remember(run, .init(thread: thread, assistantMessageID: reply))
        try await Task.sleep(for: .milliseconds(20))
        #expect(cache.run(run) == nil)
    }

    @Test("never holds more than its capacity")
    func bounded() {
        let cache = OpenRunCache(capacity: 64, lifetime: .seconds(60))
        let runs = (0..<1000).map { _ in UUID() }
        for run in runs { cache.remember(run, .init(thread: thread, assistantMessageID: reply)) }
        #expect(cache.count <= 64)
        #expect(cache.run(runs.last!) != nil)
    }
}
