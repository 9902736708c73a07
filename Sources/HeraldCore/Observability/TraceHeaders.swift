import CurlClient
import Tracing

extension CurlRequest {
    /// Adds the trace context headers (W3C `traceparent`, `tracestate`) of `context`, so the engine can continue
    /// the trace. Without a tracing backend nothing is added.
    mutating func addTraceHeaders(of context: InstrumentationContext) {
        InstrumentationSystem.instrument.inject(context, into: &headers, using: CurlHeaderInjector())
    }
}

private struct CurlHeaderInjector: Injector {
    func inject(_ value: String, forKey key: String, into headers: inout [(name: String, value: String)]) {
        headers.removeAll { $0.name.lowercased() == key.lowercased() }
        headers.append((name: key, value: value))
    }
}
