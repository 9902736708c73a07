import Foundation
import HeraldTestSupport
import Testing

/// SIGTERM with open streams: clients are told to come back over the drain window, and resume elsewhere.
@Suite("graceful drain", .timeLimit(.minutes(2)))
struct DrainTests {
    @Test("SIGTERM on one of two nodes: its streams end with retry spread over HERALD_DRAIN_SECONDS, resume on the other, miss nothing")
    func drainToOtherNode() async throws {
        let window = 4.0
        try await withStack(nodes: 2, environment: ["HERALD_DRAIN_SECONDS": "\(window)", "HERALD_MAX_STREAMS_PER_USER": "100"]) { stack in
            let nodeA = stack.api()
            let nodeB = API(stack.nodes[1].url, token: nodeA.token)
            let thread = try await nodeA.createThread()
            var streams: [SSEStream] = []
            for _ in 0..<30 {
                let stream = try await nodeA.openStream(thread)
                try await stream.waitForComment(containing: "connected")
                streams.append(stream)
            }
            _ = try await nodeB.send(thread, "[[silent]] before the drain")
            let firstCount = try await stack.logIDs(thread).count
            for stream in streams { try await stream.waitForEvents(count: firstCount) }

            let signalled = ContinuousClock.now
            stack.node.process.signal(SIGTERM)
            // Every client, like EventSource: at the end of its stream, wait `retry`, reconnect to the other node
            // with its Last-Event-ID.
            let reconnections = try await withThrowingTaskGroup(of: (retry: Int, at: Duration, stream: SSEStream, before: [String]).self) { group in
                for stream in streams {
                    group.addTask {
                        try await stream.waitForEnd(timeout: .seconds(5))
                        let retry = try #require(stream.retry)
                        try await Task.sleep(for: .milliseconds(retry))
                        let before = stream.events.map(\.lastEventID)
                        let resumed = try await nodeB.openStream(thread, headers: [("Last-Event-ID", before.last ?? "0")])
                        return (retry, ContinuousClock.now - signalled, resumed, before)
                    }
                }
                group.addTask {
                    // Published while the clients are away or coming back.
                    for n in 1...3 {
                        try await Task.sleep(for: .milliseconds(Int(window * 250)))
                        _ = try await nodeB.send(thread, "[[silent]] during the drain \(n)")
                    }
                    return (-1, .zero, try await nodeB.openStream(thread), [])
                }
                var all: [(retry: Int, at: Duration, stream: SSEStream, before: [String])] = []
                for try await reconnection in group where reconnection.retry >= 0 { all.append(reconnection) }
                return all
            }
            let status = try await stack.node.process.waitForExit(timeout: .seconds(window + 5))
            #expect(status == 0)

            // The reconnections are spread over the window, not bunched.
            let retries = reconnections.map(\.retry)
            #expect(retries.allSatisfy { (0...Int(window * 1000)).contains($0) })
            #expect(retries.max()! - retries.min()! >= Int(window * 1000) / 2, "\(retries.sorted())")
            let times = reconnections.map(\.at).sorted()
            #expect(times.last! - times.first! >= .seconds(window / 2), "\(times)")

            // Each client has every frame of the log once, in order, across the two connections.
            let ids = try await stack.logIDs(thread)
            for reconnection in reconnections {
                try await eventually("a resumed client has the whole log") {
                    reconnection.before.count + reconnection.stream.events.count >= ids.count
                }
                #expect(reconnection.before + reconnection.stream.events.map(\.lastEventID) == ids)
                await reconnection.stream.connection.closeGracefully()
            }
        }
    }
}
