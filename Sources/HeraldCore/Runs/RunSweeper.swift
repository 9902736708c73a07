import ServiceLifecycle

/// Runs the coordinator's sweep on a fixed interval on every node; the SQL makes each run's expiry happen once.
public struct RunSweeper: Service {
    let coordinator: RunCoordinator
    let interval: Duration

    public init(coordinator: RunCoordinator, interval: Duration) {
        self.coordinator = coordinator
        self.interval = interval
    }

    public func run() async throws {
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            await coordinator.sweep()
            try? await Task.sleep(for: interval)
        }
    }
}
