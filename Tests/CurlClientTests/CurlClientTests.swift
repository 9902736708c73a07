import Foundation
import HeraldTestSupport
import Logging
import Testing

@testable import CurlClient

@Suite(.timeLimit(.minutes(1)))
struct CurlHTTPClientTests {
    let logger = Logger(label: "curl-client-tests")

    @Test func postBodyAndHeadersArriveAndResponseComesBack() async throws {
        let server = try TestHTTPServer { request, _ in
            .respond(status: 201, headers: [("X-Reply", "yes"), ("X-Empty", "")], body: Array("got \(request.body.count)".utf8))
        }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        // Larger than 1 KiB, where curl would otherwise send "Expect: 100-continue".
        let body = (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let response = try await client.execute(
            CurlRequest(
                url: server.url + "/hooks/run?x=1",
                headers: [("Content-Type", "application/json"), ("X-Signature", "abc=="), ("X-Blank", "")],
                body: body
            )
        )

        #expect(response.status == 201)
        #expect(response.body == Array("got 5000".utf8))
        #expect(response.header("x-reply") == "yes")
        #expect(response.header("X-Empty") == "")
        #expect(response.headers.contains { $0.name == "Content-Length" && $0.value == "8" })

        let received = try #require(server.requests.first)
        #expect(received.method == "POST")
        #expect(received.path == "/hooks/run?x=1")
        #expect(received.body == body)
        #expect(received.header("Content-Type") == "application/json")
        #expect(received.header("X-Signature") == "abc==")
        #expect(received.header("X-Blank") == "")
        #expect(received.header("Expect") == nil)
    }

    @Test func otherMethods() async throws {
        let server = try TestHTTPServer { request, _ in
            .respond(status: 200, body: Array("\(request.method) \(request.body.count)".utf8))
        }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        let get = try await client.execute(CurlRequest(method: "GET", url: server.url + "/"))
        #expect(String(decoding: get.body, as: UTF8.self) == "GET 0")
        let put = try await client.execute(CurlRequest(method: "PUT", url: server.url + "/", body: [1, 2, 3]))
        #expect(String(decoding: put.body, as: UTF8.self) == "PUT 3")
        let delete = try await client.execute(CurlRequest(method: "DELETE", url: server.url + "/"))
        #expect(String(decoding: delete.body, as: UTF8.self) == "DELETE 0")
        let emptyPost = try await client.execute(CurlRequest(url: server.url + "/"))
        #expect(String(decoding: emptyPost.body, as: UTF8.self) == "POST 0")
    }

    @Test func httpErrorStatusIsAResponse() async throws {
        let server = try TestHTTPServer { _, _ in .respond(status: 500, body: Array("boom".utf8)) }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }
        let response = try await client.execute(CurlRequest(url: server.url + "/"))
        #expect(response.status == 500)
        #expect(response.body == Array("boom".utf8))
    }

    @Test func hundredConcurrentRequestsShareTheLoop() async throws {
        let server = try TestHTTPServer { request, _ in
            .respond(status: 200, body: request.body, delay: .milliseconds(200))
        }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        let start = ContinuousClock.now
        let bodies = try await withThrowingTaskGroup(of: (Int, CurlResponse).self) { group in
            for index in 0..<100 {
                group.addTask {
                    (index, try await client.execute(CurlRequest(url: server.url + "/\(index)", body: Array("\(index)".utf8))))
                }
            }
            var bodies: [Int: String] = [:]
            for try await (index, response) in group {
                #expect(response.status == 200)
                bodies[index] = String(decoding: response.body, as: UTF8.self)
            }
            return bodies
        }
        let elapsed = ContinuousClock.now - start

        #expect(bodies.count == 100)
        #expect(bodies.allSatisfy { $0.value == "\($0.key)" })
        // Serialised, 100 × 200 ms would take 20 s: the transfers really overlapped.
        #expect(elapsed < .seconds(10))
        #expect(server.maxConcurrentConnections > 10)
    }

    @Test func connectionRefusedIsAConnectError() async throws {
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }
        let closed = RefusingPort()
        defer { withExtendedLifetime(closed) {} }
        let error = await #expect(throws: CurlError.self) {
            _ = try await client.execute(CurlRequest(url: "http://127.0.0.1:\(closed.port)/"))
        }
        #expect(error?.isConnectError == true)
        #expect(error?.isTimeout == false)
        #expect(error?.message.isEmpty == false)
    }

    @Test func slowServerTimesOut() async throws {
        let server = try TestHTTPServer { _, _ in .hang }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        let start = ContinuousClock.now
        let error = await #expect(throws: CurlError.self) {
            _ = try await client.execute(CurlRequest(url: server.url + "/", timeout: .milliseconds(300)))
        }
        #expect(error?.isTimeout == true)
        #expect(error?.isConnectError == false)
        // The request's 300 ms, not the client's 30 s default (a loose bound: a loaded machine is slow).
        #expect(ContinuousClock.now - start < .seconds(20))
    }

    /// Also with a child process started while the transfer runs.
    @Test func cancellationStopsAHangingTransferPromptly() async throws {
        let server = try TestHTTPServer { _, _ in .hang }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        let task = Task { try await client.execute(CurlRequest(url: server.url + "/", timeout: .seconds(30))) }
        #expect(await eventually { server.requests.count == 1 })
        // A plain posix_spawn hands the child every descriptor not marked close-on-exec (Foundation's `Process` closes
        // the ones it sees; the test support's PostgreSQL start did not): the connection's socket must not be one, or
        // the child keeps the connection open after curl closes it.
        var pid = pid_t()
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("30"), nil]
        defer { argv.forEach { free($0) } }
        #expect(posix_spawn(&pid, "/bin/sleep", nil, nil, argv, environ) == 0)
        defer {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }

        let cancelledAt = ContinuousClock.now
        task.cancel()
        let result = await task.result
        // Far sooner than the 30 s transfer timeout.
        #expect(ContinuousClock.now - cancelledAt < .seconds(5))
        #expect(throws: CancellationError.self) { try result.get() }
        // The loop dropped the transfer: the server sees the connection close.
        #expect(await eventually { server.clientClosedHangs == 1 })

        // The client still works afterwards.
        let closed = RefusingPort()
        defer { withExtendedLifetime(closed) {} }
        let refused = await #expect(throws: CurlError.self) {
            _ = try await client.execute(CurlRequest(url: "http://127.0.0.1:\(closed.port)/"))
        }
        #expect(refused?.isConnectError == true)
    }

    @Test func alreadyCancelledTaskDoesNotStart() async throws {
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await client.execute(CurlRequest(url: "http://127.0.0.1:1/"))
        }
        await #expect(throws: CancellationError.self) { try await task.value }
    }

    @Test func shutdownFailsPendingAndLaterTransfers() async throws {
        let server = try TestHTTPServer { _, _ in .hang }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)

        let task = Task { try await client.execute(CurlRequest(url: server.url + "/")) }
        #expect(await eventually { server.requests.count == 1 })
        client.shutdown()
        client.shutdown()  // idempotent

        let pending = await #expect(throws: CurlError.self) { try await task.value }
        #expect(pending?.isShutdown == true)
        let later = await #expect(throws: CurlError.self) {
            _ = try await client.execute(CurlRequest(url: server.url + "/"))
        }
        #expect(later?.isShutdown == true)
    }

    @Test func invalidHeaderIsRejected() async throws {
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }
        await #expect(throws: CurlError.self) {
            _ = try await client.execute(CurlRequest(url: "http://127.0.0.1:1/", headers: [("X-Bad", "a\r\nInjected: 1")]))
        }
    }
}

@Suite(.timeLimit(.minutes(1)))
struct RetryTests {
    let logger = Logger(label: "curl-retry-tests")
    let fast = RetryPolicy(maxAttempts: 5, initialDelay: .milliseconds(10), maxDelay: .milliseconds(50))

    @Test func serviceUnavailableTwiceThenSuccess() async throws {
        let server = try TestHTTPServer { _, index in
            index < 2 ? .respond(status: 503) : .respond(status: 200, body: Array("ok".utf8))
        }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        let response = try await client.execute(CurlRequest(url: server.url + "/"), retrying: fast)
        #expect(response.status == 200)
        #expect(response.body == Array("ok".utf8))
        #expect(server.requests.count == 3)
    }

    @Test func badRequestIsNotRetried() async throws {
        let server = try TestHTTPServer { _, _ in .respond(status: 400) }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        let response = try await client.execute(CurlRequest(url: server.url + "/"), retrying: fast)
        #expect(response.status == 400)
        #expect(server.requests.count == 1)
    }

    @Test func lastResponseReturnedWhenAttemptsRunOut() async throws {
        let server = try TestHTTPServer { _, index in .respond(status: index % 2 == 0 ? 500 : 429) }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        var policy = fast
        policy.maxAttempts = 3
        let response = try await client.execute(CurlRequest(url: server.url + "/"), retrying: policy)
        #expect(response.status == 500)
        #expect(server.requests.count == 3)
    }

    @Test func retryAfterIsHonouredButCapped() async throws {
        let server = try TestHTTPServer { _, index in
            index == 0 ? .respond(status: 503, headers: [("Retry-After", "30")]) : .respond(status: 204)
        }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        let start = ContinuousClock.now
        let response = try await client.execute(CurlRequest(url: server.url + "/"), retrying: fast)
        #expect(response.status == 204)
        // Capped well below the 30 s the server asked for (a loose bound: a loaded machine is slow).
        #expect(ContinuousClock.now - start < .seconds(20))

        let delay = CurlHTTPClient.retryAfter(
            CurlResponse(status: 429, headers: [("retry-after", " 2 ")], body: []),
            policy: RetryPolicy(maxDelay: .seconds(5))
        )
        #expect(delay == .seconds(2))
        #expect(CurlHTTPClient.retryAfter(CurlResponse(status: 500, headers: [("Retry-After", "2")], body: []), policy: fast) == nil)
    }

    @Test func connectErrorsAreRetriedThenThrown() async throws {
        var attempts = 0
        var sleeps: [Duration] = []
        let error = await #expect(throws: CurlError.self) {
            _ = try await CurlHTTPClient.withRetries(
                policy: RetryPolicy(maxAttempts: 4, initialDelay: .milliseconds(100), maxDelay: .seconds(1)),
                logger: logger,
                sleep: { sleeps.append($0) }
            ) {
                attempts += 1
                throw CurlError(code: 7, message: "Failed to connect")  // CURLE_COULDNT_CONNECT
            }
        }
        #expect(error?.isConnectError == true)
        #expect(attempts == 4)
        #expect(sleeps.count == 3)

        // End to end against a closed port.
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }
        let closed = RefusingPort()
        defer { withExtendedLifetime(closed) {} }
        let real = await #expect(throws: CurlError.self) {
            _ = try await client.execute(CurlRequest(url: "http://127.0.0.1:\(closed.port)/"), retrying: fast)
        }
        #expect(real?.isConnectError == true)
    }

    @Test func otherErrorsAreNotRetried() async throws {
        var attempts = 0
        await #expect(throws: CurlError.self) {
            _ = try await CurlHTTPClient.withRetries(policy: fast, logger: logger, sleep: { _ in }) {
                attempts += 1
                throw CurlError(code: 60, message: "SSL peer certificate was not OK")
            }
        }
        #expect(attempts == 1)
    }

    @Test func jitterStaysWithinBounds() {
        let policy = RetryPolicy(maxAttempts: 10, initialDelay: .milliseconds(100), maxDelay: .seconds(1), multiplier: 2)
        #expect(policy.delay(beforeAttempt: 1) == .zero)
        let caps: [Int: Duration] = [
            2: .milliseconds(100), 3: .milliseconds(200), 4: .milliseconds(400), 5: .milliseconds(800), 6: .seconds(1), 10: .seconds(1),
        ]
        for (attempt, cap) in caps {
            #expect(policy.delayCap(beforeAttempt: attempt) == cap)
            let samples = (0..<500).map { _ in policy.delay(beforeAttempt: attempt) }
            #expect(samples.allSatisfy { $0 >= .zero && $0 <= cap })
            // Full jitter spreads over the whole range.
            #expect(samples.contains { $0 < cap / 4 })
            #expect(samples.contains { $0 > cap * 3 / 4 })
        }
        let huge = RetryPolicy(initialDelay: .seconds(1), maxDelay: .seconds(5), multiplier: 10)
        #expect(huge.delayCap(beforeAttempt: 1000) == .seconds(5))
    }
}
