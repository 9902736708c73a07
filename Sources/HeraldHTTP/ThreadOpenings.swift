import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// The threads a stream is opening on the whole way (`StreamOpener.open`: PostgreSQL's owner check, the
/// subscription, the log's position), and the streams of the same threads waiting for that to end: after it, a
/// thread is watched here, and they open on their event loops without asking PostgreSQL and Redis the same again.
/// When a thread's clients all (re)connect at once, to a node that has just started say, one of them pays for the
/// thread instead of every one.
///
/// The one that pays is known before its open begins: a stream the event loop hands to the router (the thread not
/// watched here yet, or its token not verified yet) claims the thread's opening at once (`waitOrClaim`), so that the
/// streams arriving while its request makes its way to the route (a pipeline set up, a token verified) wait for it
/// too instead of each going the whole way.
final class ThreadOpenings: Sendable {
    private struct Opening {
        var inFlight = 0
        /// A stream on its way to the route, which will open the thread (or fail before it does).
        var claim: Claim?
        var waiting: [EventLoopPromise<Void>] = []
    }

    /// A thread's opening claimed by a stream handed to the router: its open's `begin` takes the claim over; the
    /// holder releases it once the request is answered or its connection closed (whichever comes first; again is
    /// nothing), which lets the waiting streams ask again if the open never began.
    final class Claim: Sendable {
        fileprivate let thread: UUID
        /// (Held while the claim is: what it keeps alive is released with it.)
        fileprivate let openings: ThreadOpenings

        fileprivate init(thread: UUID, openings: ThreadOpenings) {
            self.thread = thread
            self.openings = openings
        }

        func release() {
            openings.release(self)
        }
    }

    /// What a stream that cannot open on its loop does about its thread's opening.
    enum Turn {
        /// Waits for the opening in flight: the future (on the loop given) succeeds once it is over.
        case wait(EventLoopFuture<Void>)
        /// Goes to the router, the thread's opening claimed for it.
        case claimed(Claim)
    }

    private let openings = NIOLockedValueBox([UUID: Opening]())

    /// An open of `thread` the whole way starts (taking over a claim of it); `end` says when it is over, however it
    /// went.
    func begin(_ thread: UUID) {
        openings.withLockedValue { openings in
            openings[thread, default: Opening()].inFlight += 1
            openings[thread]?.claim = nil
        }
    }

    /// The open `begin` announced is over: the streams waiting for it ask again.
    func end(_ thread: UUID) {
        let waiting = openings.withLockedValue { openings -> [EventLoopPromise<Void>] in
            guard var opening = openings[thread] else { return [] }
            opening.inFlight -= 1
            return Self.release(&opening, of: thread, in: &openings)
        }
        for promise in waiting { promise.succeed() }
    }

    /// A future on `eventLoop` that succeeds once the open of `thread` in flight (or claimed) is over, or when none
    /// is, a claim of it for the caller.
    func waitOrClaim(_ thread: UUID, on eventLoop: any EventLoop) -> Turn {
        openings.withLockedValue { openings -> Turn in
            if let claim = claim(thread, in: &openings) { return .claimed(claim) }
            let promise = eventLoop.makePromise(of: Void.self)
            openings[thread]?.waiting.append(promise)
            return .wait(promise.futureResult)
        }
    }

    /// A claim of `thread`'s opening for the caller; nil when an open of it is in flight or claimed already.
    func claim(_ thread: UUID) -> Claim? {
        openings.withLockedValue { claim(thread, in: &$0) }
    }

    private func claim(_ thread: UUID, in openings: inout [UUID: Opening]) -> Claim? {
        guard openings[thread] == nil else { return nil }
        let claim = Claim(thread: thread, openings: self)
        openings[thread] = Opening(claim: claim)
        return claim
    }

    private func release(_ claim: Claim) {
        let waiting = openings.withLockedValue { openings -> [EventLoopPromise<Void>] in
            guard var opening = openings[claim.thread], opening.claim === claim else { return [] }
            opening.claim = nil
            return Self.release(&opening, of: claim.thread, in: &openings)
        }
        for promise in waiting { promise.succeed() }
    }

    /// Hands back `opening`'s waiting streams, and forgets it if nothing is in flight or claimed any more.
    private static func release(_ opening: inout Opening, of thread: UUID, in openings: inout [UUID: Opening]) -> [EventLoopPromise<Void>] {
        let waiting = opening.waiting
        opening.waiting = []
        openings[thread] = opening.inFlight > 0 || opening.claim != nil ? opening : nil
        return waiting
    }
}
