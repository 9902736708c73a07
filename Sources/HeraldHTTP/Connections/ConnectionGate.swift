import Metrics
import Synchronization

/// Counts the node's open client connections across all event loops and decides, at accept, whether a new one
/// is served, limited to the operators' routes, or refused.
final class ConnectionGate: Sendable {
    enum Admission: Equatable {
        /// Within `maxConnections`: served in full.
        case served
        /// In the operators' reserve above `maxConnections`: `/healthz` and `/metrics` only.
        case operatorsOnly
        /// Beyond the reserve: answered with a 503 and closed at once.
        case refused
    }

    let maxConnections: Int
    let reserve: Int
    private let open = Atomic<Int>(0)
    /// Nil for the operations listener, whose connections are not clients'.
    private let openMeter: Meter?
    private let refusedCounter: Counter?

    init(maxConnections: Int, reserve: Int, countsClients: Bool = true) {
        self.maxConnections = maxConnections
        self.reserve = reserve
        self.openMeter = countsClients ? Meter(label: "herald_connections_open") : nil
        self.refusedCounter = countsClients ? Counter(label: "herald_connections_refused_total") : nil
    }

    /// Takes a slot for a new connection unless every slot is taken; a taken slot must be given back with `release()`.
    func admit() -> Admission {
        var current = open.load(ordering: .relaxed)
        while current < maxConnections + reserve {
            let (exchanged, original) = open.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged {
                openMeter?.increment()
                return current < maxConnections ? .served : .operatorsOnly
            }
            current = original
        }
        refusedCounter?.increment()
        return .refused
    }

    /// Gives back the slot of a connection that `admit()` served or limited, once it has closed.
    func release() {
        open.subtract(1, ordering: .relaxed)
        openMeter?.decrement()
    }
}
