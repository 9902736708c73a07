import Foundation
import Logging

/// Collects values from callbacks on any thread. `@unchecked Sendable`: `items` is only touched with `lock` held.
final class Recorder<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Element] = []

    func append(_ item: Element) {
        self.lock.withLock { self.items.append(item) }
    }

    var all: [Element] {
        self.lock.withLock { self.items }
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns its last value.
func eventually(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}

let testLogger: Logger = {
    var logger = Logger(label: "RedisClientTests")
    logger.logLevel = .critical
    return logger
}()
