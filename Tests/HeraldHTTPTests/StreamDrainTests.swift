import Logging
import ServiceLifecycle
import Testing

@testable import HeraldHTTP

@Suite("stream drain")
struct StreamDrainTests {
    @Test("the drain starts with the graceful shutdown: from then on the node is draining")
    func drainsOnShutdown() async throws {
        let drain = StreamDrain()
        #expect(!drain.isDraining)
        let group = ServiceGroup(configuration: .init(services: [drain], logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(drain.isDraining)
    }
}
