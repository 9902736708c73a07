import NIOCore

/// Who holds which connection. Serializes lending and returning; never touches libpq except to finish connections
/// returned after shutdown.
actor PoolState {
    /// What a borrower gets: an open connection, or the right to open one (a free slot under the size limit).
    enum Lease: Sendable {
        case connection(ConnectionHandle)
        case slot

        var handle: ConnectionHandle? {
            if case .connection(let handle) = self { return handle }
            return nil
        }
    }

    private struct Waiter {
        var id: Int
        var continuation: CheckedContinuation<Lease, any Error>
    }

    private let size: Int
    private var idle: [ConnectionHandle] = []
    /// Idle plus lent-out leases (connections or slots).
    private var inUse = 0
    private var waiters = CircularBuffer<Waiter>()
    private var nextWaiterID = 0
    private var isShutDown = false

    init(size: Int) {
        self.size = size
    }

    /// Waits (FIFO) until a connection or a slot is free. Throws `PostgresError.cancelled` if the task is cancelled
    /// while waiting, `poolShutDown` after shutdown.
    func acquire() async throws -> Lease {
        let id = nextWaiterID
        nextWaiterID += 1
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Lease, any Error>) in
                // All checks and the enqueue happen in one actor turn, so a connection returned meanwhile is not
                // missed. A cancellation that raced ahead of the enqueue is seen through `Task.isCancelled`.
                if isShutDown {
                    continuation.resume(throwing: PostgresError.poolShutDown)
                } else if Task.isCancelled {
                    continuation.resume(throwing: PostgresError.cancelled)
                } else if let handle = idle.popLast() {
                    continuation.resume(returning: .connection(handle))
                } else if inUse < size {
                    inUse += 1
                    continuation.resume(returning: .slot)
                } else {
                    waiters.append(Waiter(id: id, continuation: continuation))
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id: id) }
        }
    }

    private func cancelWaiter(id: Int) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        let waiter = waiters.remove(at: index)
        waiter.continuation.resume(throwing: PostgresError.cancelled)
    }

    /// Returns a lease: the connection if it is healthy, `nil` if it was discarded or never opened.
    func release(_ handle: ConnectionHandle?) {
        if isShutDown {
            handle?.close()
            inUse -= 1
        } else if let waiter = waiters.popFirst() {
            waiter.continuation.resume(returning: handle.map { .connection($0) } ?? .slot)
        } else if let handle {
            idle.append(handle)
        } else {
            inUse -= 1
        }
    }

    /// Refuses new borrowers, fails the waiting ones, and hands back the idle connections to finish.
    func shutdown() -> [ConnectionHandle] {
        isShutDown = true
        while let waiter = waiters.popFirst() {
            waiter.continuation.resume(throwing: PostgresError.poolShutDown)
        }
        let handles = idle
        idle = []
        inUse -= handles.count
        return handles
    }
}
