import Foundation
import NIOConcurrencyHelpers

/// What a node remembers of runs that are still open, so that a token delta costs no PostgreSQL read: a run's
/// thread, reply id and callback token never change. Filled when this node creates a run or reads one from
/// PostgreSQL; an entry goes when the run's final result is stored on this node, or when it is older than a run
/// may live. Stale entries (a run finished on another node) are harmless: Redis refuses deltas of a run whose
/// final frames are out (`FramePublisher`), and final results always go through PostgreSQL.
final class OpenRunCache: Sendable {
    struct Run: Sendable {
        let thread: UUID
        let assistantMessageID: UUID
        /// Known once the run's callback grant was read or created here.
        var callbackTokenHash: String?
    }

    private struct Entry {
        var run: Run
        let expires: ContinuousClock.Instant
    }

    private let capacity: Int
    private let lifetime: Duration
    private let entries = NIOLockedValueBox([UUID: Entry]())

    init(capacity: Int, lifetime: Duration) {
        self.capacity = capacity
        self.lifetime = lifetime
    }

    func run(_ id: UUID) -> Run? {
        let now = ContinuousClock.now
        return entries.withLockedValue { entries in
            guard let entry = entries[id] else { return nil }
            guard entry.expires > now else {
                entries[id] = nil
                return nil
            }
            return entry.run
        }
    }

    /// Remembers an open run; keeps a token hash already known if `run` has none.
    func remember(_ id: UUID, _ run: Run) {
        let now = ContinuousClock.now
        entries.withLockedValue { entries in
            if let known = entries[id] {
                var merged = run
                merged.callbackTokenHash = run.callbackTokenHash ?? known.run.callbackTokenHash
                entries[id] = Entry(run: merged, expires: known.expires)
                return
            }
            if entries.count >= capacity {
                entries = entries.filter { $0.value.expires > now }
                // Still full of live runs: forget an eighth, arbitrarily; they are read again when needed.
                if entries.count >= capacity {
                    for id in entries.keys.prefix(max(1, capacity / 8)) { entries[id] = nil }
                }
            }
            entries[id] = Entry(run: run, expires: now + lifetime)
        }
    }

    func forget(_ id: UUID) {
        _ = entries.withLockedValue { $0.removeValue(forKey: id) }
    }

    var count: Int { entries.withLockedValue { $0.count } }
}
