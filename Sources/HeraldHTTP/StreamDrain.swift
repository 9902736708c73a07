import HeraldCore
import NIOConcurrencyHelpers
import ServiceLifecycle

/// Graceful drain, the first thing a node does on SIGTERM: readiness turns false and new streams are refused
/// (503, so a load balancer and clients go elsewhere), and every open stream is ended with a final `retry:`
/// spread at random over `HERALD_DRAIN_SECONDS`, so its clients reconnect to the other nodes over that window,
/// each resuming from its `Last-Event-ID`, instead of all in the same second. Then the server shuts down as
/// usual: in-flight requests (webhooks) finish, the process exits.
///
/// Run it in the service group after the application, so that it is shut down (here: drains) before it.
public final class StreamDrain: Service, Sendable {
    private struct State {
        var draining = false
        var hub: FanoutHub?
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// The hub whose streams are drained; set once the application is built.
    func drains(_ hub: FanoutHub) {
        state.withLockedValue { $0.hub = hub }
    }

    var isDraining: Bool { state.withLockedValue { $0.draining } }

    public func run() async throws {
        try? await gracefulShutdown()
        // Cancelled rather than shut down: nothing to drain.
        guard !Task.isCancelled else { return }
        let hub = state.withLockedValue { state -> FanoutHub? in
            state.draining = true
            return state.hub
        }
        hub?.endAll(.shutdown)
    }
}
