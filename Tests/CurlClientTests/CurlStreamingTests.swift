import CurlClient
import Foundation
import HeraldTestSupport
import Logging
import Testing

@Suite(.timeLimit(.minutes(1)))
struct CurlStreamingTests {
    let logger = Logger(label: "test")

    @Test func bodyPiecesArriveWhileTheTransferRuns() async throws {
        let gate = TestHTTPServer.Gate()
        let pieces = [Array("event: a\ndata: 1\n\n".utf8), Array("event: b\ndata: 2\n\n".utf8), Array("data: 3\n\n".utf8)]
        let server = try TestHTTPServer { _, _ in
            .stream(status: 200, headers: [("Content-Type", "text/event-stream")], pieces: pieces, gate: gate)
        }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }

        let response = try await client.stream(CurlRequest(method: "GET", url: server.url + "/events", headers: [("Last-Event-ID", "0")]))
        #expect(response.head.status == 200)
        #expect(response.head.header("content-type") == "text/event-stream")
        #expect(server.requests.first?.header("Last-Event-ID") == "0")
        var received: [UInt8] = []
        var iterator = response.body.makeAsyncIterator()
        // Each piece is read before the server may send the next: the body is not buffered to its end.
        for (number, piece) in pieces.enumerated() {
            while received.count < pieces[...number].map(\.count).reduce(0, +) {
                received += try #require(try await iterator.next())
            }
            #expect(received.suffix(piece.count) == piece[...])
            gate.open()
        }
        #expect(try await iterator.next() == nil)
    }

    @Test func anErrorStatusComesAsAHeadWithItsBody() async throws {
        let server = try TestHTTPServer { _, _ in .respond(status: 404, body: Array(#"{"detail":"Not Found"}"#.utf8)) }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }
        let response = try await client.stream(CurlRequest(method: "GET", url: server.url + "/missing"))
        #expect(response.head.status == 404)
        var body: [UInt8] = []
        for try await piece in response.body { body += piece }
        #expect(String(decoding: body, as: UTF8.self) == #"{"detail":"Not Found"}"#)
    }

    @Test func anEmptyBodyEndsRightAfterTheHead() async throws {
        let server = try TestHTTPServer { _, _ in .respond(status: 204) }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }
        let response = try await client.stream(CurlRequest(method: "GET", url: server.url + "/"))
        #expect(response.head.status == 204)
        var iterator = response.body.makeAsyncIterator()
        #expect(try await iterator.next() == nil)
    }

    @Test func cancellingTheReaderClosesTheConnection() async throws {
        let gate = TestHTTPServer.Gate()
        let server = try TestHTTPServer { _, _ in .stream(status: 200, pieces: [Array("data: 1\n\n".utf8)], gate: gate, thenHang: true) }
        defer { server.stop() }
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }
        let reader = Task {
            let response = try await client.stream(CurlRequest(method: "GET", url: server.url + "/", timeout: .seconds(120)))
            var count = 0
            for try await piece in response.body { count += piece.count }
            return count
        }
        #expect(await eventually { server.requests.count == 1 })
        try await Task.sleep(for: .milliseconds(100))
        reader.cancel()
        _ = await reader.result
        // Far sooner than the 120 s timeout (a loaded machine has been seen to need more than 5 s), the server sees
        // the client hang up.
        #expect(await eventually(within: .seconds(30)) { server.clientClosedHangs == 1 })
    }

    @Test func aReaderThatFallsTooFarBehindFailsTheTransfer() async throws {
        let gate = TestHTTPServer.Gate()
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 64 * 1024)
        let server = try TestHTTPServer { _, _ in .stream(status: 200, pieces: [big, big, big], gate: gate, thenHang: true) }
        defer { server.stop() }
        gate.open()
        gate.open()
        let client = try CurlHTTPClient(logger: logger)
        defer { client.shutdown() }
        let response = try await client.stream(CurlRequest(method: "GET", url: server.url + "/"), maxPendingBytes: 16 * 1024)
        // Nothing is read: the transfer fails and curl hangs up, instead of buffering the rest.
        #expect(await eventually(within: .seconds(10)) { server.clientClosedHangs == 1 })
        let error = await #expect(throws: CurlError.self) {
            for try await _ in response.body {}
        }
        #expect(error?.message.contains("fell more than 16384 bytes behind") == true, "\(String(describing: error))")
    }
}
