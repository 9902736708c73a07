import CEpoll
import Dispatch
import Foundation
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// An event loop of Herald's own: a thread waiting in `epoll` for the sockets of plain event streams, with no NIO
/// channel between a stream and its socket. It is an `EventLoop` to the rest of Herald, so the hub's per-loop
/// fan-out, a stream's state, futures and timers work on it as on NIO's loops.
///
/// Why: per stream, NIO's channel machinery (the accepted channel's futures and registration, three `epoll_ctl`,
/// the pipeline a frame walks to reach the socket) cost more than the rest of opening a stream and a third of
/// writing a frame; nginx, which Herald is measured against, does neither. See docs/benchmarks.md.
final class StreamLoop: EventLoop {
    /// Called on the loop with the `epoll` events of a watched descriptor.
    typealias Watcher = (_ events: UInt32) -> Void

    private struct Inbox {
        var tasks: [@Sendable () -> Void] = []
        /// The loop was woken for the tasks already (or is running them): no second `eventfd` write.
        var woken = false
        var stopped = false
    }

    private struct Timer {
        let id: UInt64
        let deadline: NIODeadline
        let run: () -> Void
        /// Fails the task's promise: the loop stopped first.
        let abandon: () -> Void
    }

    /// What only the loop's thread touches.
    // `@unchecked Sendable`: the loop object is shared (it is an `EventLoop`), but this part of it is read and
    // written only on the loop's thread, which every entry point checks (`inEventLoop`) or hops to (`execute`).
    private final class Confined: @unchecked Sendable {
        var watchers: [Int32: (generation: UInt32, watcher: Watcher)] = [:]
        var generation: UInt32 = 0
        /// Few at a time (a loop's heartbeats, the head clock of its connections), so a list, not a heap.
        var timers: [Timer] = []
        var onStop: [() -> Void] = []
    }

    let name: String
    private let epoll: Int32
    private let wakeup: Int32
    private let inbox = NIOLockedValueBox(Inbox())
    private let confined = Confined()
    private let thread = Atomic<UInt>(0)
    private let timerIDs = Atomic<UInt64>(0)
    private let stopped = DispatchGroup()

    /// A loop on a thread of its own, running until `shutdownGracefully`.
    init(name: String) throws {
        self.name = name
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw IOError(errnoCode: errno, reason: "epoll_create1") }
        wakeup = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard wakeup >= 0 else {
            Glibc.close(epoll)
            throw IOError(errnoCode: errno, reason: "eventfd")
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = UInt64(UInt32.max)
        epoll_ctl(epoll, EPOLL_CTL_ADD, wakeup, &event)
        stopped.enter()
        // Tasks posted before the thread runs wait in the inbox; only the thread itself asks `inEventLoop` first.
        let loop = self
        Thread { loop.run() }.start()
    }

    // MARK: Descriptors

    /// Watches `descriptor` for `events` (edge-triggered ones included), calling `watcher` on the loop; a descriptor
    /// is watched once. On the loop.
    func watch(_ descriptor: Int32, events: UInt32, _ watcher: @escaping Watcher) throws {
        preconditionInEventLoop()
        confined.generation &+= 1
        let generation = confined.generation
        var event = epoll_event()
        event.events = events
        event.data.u64 = UInt64(generation) << 32 | UInt64(UInt32(bitPattern: descriptor))
        guard epoll_ctl(epoll, EPOLL_CTL_ADD, descriptor, &event) == 0 else {
            throw IOError(errnoCode: errno, reason: "epoll_ctl")
        }
        confined.watchers[descriptor] = (generation, watcher)
    }

    /// Watches a watched `descriptor` for `events` instead (nothing if it is not watched). On the loop.
    func changeEvents(of descriptor: Int32, to events: UInt32) {
        preconditionInEventLoop()
        guard let entry = confined.watchers[descriptor] else { return }
        var event = epoll_event()
        event.events = events
        event.data.u64 = UInt64(entry.generation) << 32 | UInt64(UInt32(bitPattern: descriptor))
        epoll_ctl(epoll, EPOLL_CTL_MOD, descriptor, &event)
    }

    /// Stops watching `descriptor` (before it is closed, or handed to another owner). On the loop.
    func unwatch(_ descriptor: Int32) {
        preconditionInEventLoop()
        guard confined.watchers.removeValue(forKey: descriptor) != nil else { return }
        epoll_ctl(epoll, EPOLL_CTL_DEL, descriptor, nil)
    }

    /// Runs `action` on the loop when it stops, before its thread ends. On the loop.
    func whenStopping(_ action: @escaping () -> Void) {
        preconditionInEventLoop()
        confined.onStop.append(action)
    }

    // MARK: EventLoop

    var inEventLoop: Bool { thread.load(ordering: .relaxed) == pthread_self() }

    func execute(_ task: @escaping @Sendable () -> Void) {
        // The loop itself looks at its inbox before it waits again: no wake-up needed from its own thread.
        let onLoop = inEventLoop
        let wake = inbox.withLockedValue { inbox -> Bool in
            guard !inbox.stopped else { return false }
            inbox.tasks.append(task)
            guard !onLoop, !inbox.woken else { return false }
            inbox.woken = true
            return true
        }
        if wake {
            var one: UInt64 = 1
            _ = Glibc.write(wakeup, &one, 8)
        }
    }

    @discardableResult
    func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise = makePromise(of: T.self)
        let timerID = timerIDs.wrappingAdd(1, ordering: .relaxed).newValue
        let schedule: @Sendable () -> Void = {
            self.confined.timers.append(
                Timer(
                    id: timerID, deadline: deadline,
                    run: {
                        // On the loop: the promise's value need not be `Sendable`.
                        let isolated = promise.assumeIsolatedUnsafeUnchecked()
                        do { isolated.succeed(try task()) } catch { promise.fail(error) }
                    },
                    abandon: { promise.fail(EventLoopError.shutdown) }
                )
            )
        }
        if inEventLoop { schedule() } else { execute(schedule) }
        return Scheduled(promise: promise) {
            self.execute {
                guard let index = self.confined.timers.firstIndex(where: { $0.id == timerID }) else { return }
                self.confined.timers.remove(at: index)
                promise.fail(EventLoopError.cancelled)
            }
        }
    }

    @discardableResult
    func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        scheduleTask(deadline: .now() + delay, task)
    }

    func preconditionInEventLoop(file: StaticString, line: UInt) {
        precondition(inEventLoop, "not on \(name)", file: file, line: line)
    }

    func preconditionNotInEventLoop(file: StaticString, line: UInt) {
        precondition(!inEventLoop, "on \(name)", file: file, line: line)
    }

    // MARK: EventLoopGroup

    func next() -> any EventLoop { self }
    func any() -> any EventLoop { self }
    func makeIterator() -> EventLoopIterator { EventLoopIterator([self]) }

    /// Stops the loop once the tasks posted so far have run (those posted later are dropped), then closes its
    /// descriptors: the watchers' `whenStopping` actions close theirs.
    func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        execute {
            self.inbox.withLockedValue { $0.stopped = true }
        }
        stopped.notify(queue: queue) { callback(nil) }
    }

    // MARK: The thread

    private func run() {
        thread.store(pthread_self(), ordering: .relaxed)
        cepoll_name_thread(name)
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        while true {
            let timeout = waitMilliseconds()
            let count = epoll_wait(epoll, &events, Int32(events.count), timeout)
            if count > 0 {
                for event in events[0..<Int(count)] {
                    let key = event.data.u64
                    let descriptor = Int32(bitPattern: UInt32(truncatingIfNeeded: key))
                    if key == UInt64(UInt32.max) {
                        var value: UInt64 = 0
                        _ = Glibc.read(wakeup, &value, 8)
                        continue
                    }
                    // A descriptor closed earlier in this batch may have been reused by a newer watcher already.
                    guard let entry = confined.watchers[descriptor], entry.generation == UInt32(key >> 32) else { continue }
                    entry.watcher(event.events)
                }
            }
            runDueTimers()
            let (tasks, stop) = inbox.withLockedValue { inbox in
                defer {
                    inbox.tasks.removeAll(keepingCapacity: true)
                    inbox.woken = false
                }
                return (inbox.tasks, inbox.stopped)
            }
            // Stopped (by a task of an earlier turn) with nothing left that was posted before: done.
            if stop, tasks.isEmpty { break }
            for task in tasks { task() }
        }
        for action in confined.onStop { action() }
        confined.onStop = []
        confined.watchers = [:]
        for timer in confined.timers { timer.abandon() }
        confined.timers = []
        Glibc.close(wakeup)
        Glibc.close(epoll)
        stopped.leave()
    }

    /// How long `epoll_wait` may sleep: not at all with tasks waiting, until the next timer, or until woken.
    private func waitMilliseconds() -> Int32 {
        if inbox.withLockedValue({ !$0.tasks.isEmpty || $0.stopped }) { return 0 }
        guard let next = confined.timers.lazy.map(\.deadline).min() else { return -1 }
        let nanoseconds = (next - .now()).nanoseconds
        if nanoseconds <= 0 { return 0 }
        return Int32(clamping: (nanoseconds + 999_999) / 1_000_000)
    }

    private func runDueTimers() {
        guard !confined.timers.isEmpty else { return }
        let now = NIODeadline.now()
        let due = confined.timers.filter { $0.deadline <= now }
        guard !due.isEmpty else { return }
        confined.timers.removeAll { $0.deadline <= now }
        for timer in due.sorted(by: { $0.deadline < $1.deadline }) { timer.run() }
    }
}
