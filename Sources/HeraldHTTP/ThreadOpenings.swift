import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// The threads a stream is opening on the whole way (`StreamOpener.open`: PostgreSQL's owner check, the
/// subscription, the log's position), and the streams of the same threads waiting for that to end: after it, a
/// thread is watched here, and they open on their event loops without asking PostgreSQL and Redis the same again.
/// When a thread's clients all (re)connect at once, to a node that has just started say, one of them pays for the
/// thread instead of every one.
final class ThreadOpenings: Sendable {
    private struct Opening {
        var inFlight = 0
        var waiting: [EventLoopPromise<Void>] = []
    }

    private let openings = NIOLockedValueBox([UUID: Opening]())

    /// An open of `thread` the whole way starts; `end` says when it is over, however it went.
    func begin(_ thread: UUID) {
        openings.withLockedValue { $0[thread, default: Opening()].inFlight += 1 }
    }

    /// The open `begin` announced is over: the streams waiting for it ask again.
    func end(_ thread: UUID) {
        let waiting = openings.withLockedValue { openings -> [EventLoopPromise<Void>] in
            guard var opening = openings[thread] else { return [] }
            opening.inFlight -= 1
            let waiting = opening.waiting
            opening.waiting = []
            openings[thread] = opening.inFlight > 0 ? opening : nil
            return waiting
        }
        for promise in waiting { promise.succeed() }
    }

    /// A future on `eventLoop` that succeeds once an open of `thread` in flight is over; nil when none is.
    func afterOpening(_ thread: UUID, on eventLoop: any EventLoop) -> EventLoopFuture<Void>? {
        openings.withLockedValue { openings -> EventLoopFuture<Void>? in
            guard openings[thread] != nil else { return nil }
            let promise = eventLoop.makePromise(of: Void.self)
            openings[thread]?.waiting.append(promise)
            return promise.futureResult
        }
    }
}
