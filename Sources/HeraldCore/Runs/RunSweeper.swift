import ServiceLifecycle

/// Runs the coordinator's sweep on a fixed interval on every node; the SQL makes each run's expiry happen once.
/// Now and then it also forgets webhook delivery ids old enough that no sender retries them.
public struct RunSweeper: Service {
    let coordinator: RunCoordinator
    let interval: Duration
    private static let passesBetweenHousekeeping = 600

    public init(coordinator: RunCoordinator, interval: Duration) {
        self.coordinator = coordinator
        self.interval = interval
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var pass = 0
            while !Task.isCancelled {
                await coordinator.sweep()
                if pass % Self.passesBetweenHousekeeping == 0 {
                    try? await coordinator.store.forgetOldDeliveries()
                }
                pass += 1
                try? await Task.sleep(for: interval)
            }
        }
    }
}
