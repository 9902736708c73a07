import Metrics
import NIOConcurrencyHelpers

/// Metric handles of one name, one per value of its single label, made once and reused: creating a handle goes
/// through the metrics factory (a registry lookup and name mapping), too much to repeat per request or frame.
/// The label's values must come from a small fixed set.
public final class MetricHandles<Metric: Sendable>: Sendable {
    private let handles = NIOLockedValueBox<[String: Metric]>([:])
    private let make: @Sendable (String) -> Metric

    public init(make: @escaping @Sendable (String) -> Metric) {
        self.make = make
    }

    public subscript(_ value: String) -> Metric {
        if let handle = handles.withLockedValue({ $0[value] }) { return handle }
        let handle = make(value)
        handles.withLockedValue { $0[value] = handle }
        return handle
    }
}
