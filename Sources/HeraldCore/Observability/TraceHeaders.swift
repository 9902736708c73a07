import CurlClient
import Tracing

extension CurlRequest {
    /// Adds the trace context headers (W3C `traceparent`, `tracestate`) of `context`, so the engine can continue
    /// the trace. Without a tracing backend nothing is added.
    mutating func addTraceHeaders(of context: InstrumentationContext) {
        InstrumentationSystem.instrument.inject(context, into: &headers, using: CurlHeaderInjector())
    }
}

extension InstrumentationContext {
    /// This context's W3C `traceparent`; nil without a tracing backend.
    var traceparent: String? {
        var headers: [(name: String, value: String)] = []
        InstrumentationSystem.instrument.inject(self, into: &headers, using: CurlHeaderInjector())
        return headers.first { $0.name.lowercased() == "traceparent" }?.value
    }
}

private struct CurlHeaderInjector: Injector {
    func inject(_ value: String, forKey key: String, into headers: inout [(name: String, value: String)]) {
        headers.removeAll { $0.name.lowercased() == key.lowercased() }
        headers.append((name: key, value: value))
    }
}
