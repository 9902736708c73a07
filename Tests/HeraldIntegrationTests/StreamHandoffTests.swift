import Foundation
import HeraldTestSupport
import Testing

/// Streams run by `StreamHandoff`, over raw connections so that the bytes and their order are the server's own.
@Suite("stream handoff: streams on fresh and reused connections, errors, order", .timeLimit(.minutes(2)))
struct StreamHandoffTests {
    @Test("a stream asked for after another request on a keep-alive connection: frames, and its end closes the connection")
    func streamAfterRequestOnSameConnection() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let authorization = "Authorization: Bearer \(try #require(api.token))\r\n"
            let connection = try await RawConnection.open(port: stack.node.port)
            try await connection.send("GET /chats HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n")
            #expect(await connection.waitForReceived(containing: "application/json", timeout: .seconds(10)))
            try await connection.send("GET /chats/sse/\(thread) HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n")
            #expect(await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)))

            _ = try await api.send(thread, "[[silent]] over a reused connection")
            #expect(await connection.waitForReceived(containing: "over a reused connection", timeout: .seconds(10)))

            let deleted = try await api.request("DELETE", "/chats/\(thread)")
            #expect(deleted.status == 204)
            #expect(await connection.waitForReceived(containing: "event: thread_deleted", timeout: .seconds(10)))
            // The stream's end ends its response (the last chunk) and the connection.
            #expect(await connection.waitForClose(timeout: .seconds(10)))
            #expect(connection.received.hasSuffix("0\r\n\r\n"))
        }
    }

    @Test("a stream pipelined behind another request: the responses keep the requests' order")
    func pipelinedStream() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let authorization = "Authorization: Bearer \(try #require(api.token))\r\n"
            let connection = try await RawConnection.open(port: stack.node.port)
            try await connection.send(
                "GET /chats HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n"
                    + "GET /chats/sse/\(thread) HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n"
            )
            #expect(await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)))
            let text = connection.received
            let list = try #require(text.range(of: "application/json"))
            let stream = try #require(text.range(of: "text/event-stream"))
            #expect(list.lowerBound < stream.lowerBound)
            #expect(text.components(separatedBy: "HTTP/1.1 200 OK\r\n").count == 3)
            _ = try await api.send(thread, "[[silent]] behind a pipelined request")
            #expect(await connection.waitForReceived(containing: "behind a pipelined request", timeout: .seconds(10)))
            await connection.close()
        }
    }

    @Test("an HTTP/1.0 client gets its stream unchunked, ended by the close")
    func http10Stream() async throws {
        try await withStack { stack in
            let api = stack.api()
            let thread = try await api.createThread()
            let connection = try await RawConnection.open(port: stack.node.port)
            try await connection.send("GET /chats/sse/\(thread) HTTP/1.0\r\nAuthorization: Bearer \(try #require(api.token))\r\n\r\n")
            #expect(await connection.waitForReceived(containing: ": connected", timeout: .seconds(10)))
            _ = try await api.send(thread, "[[silent]] to an old client")
            #expect(await connection.waitForReceived(containing: "to an old client", timeout: .seconds(10)))
            let text = connection.received
            #expect(text.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(text)")
            #expect(!text.lowercased().contains("transfer-encoding"))
            // The body is the frames themselves: the head's blank line, then the preamble, no chunk sizes.
            #expect(text.contains("\r\n\r\nretry: 3000\n: connected\n\n"))
            #expect(text.contains("\n\nid: "))
            #expect(!text.contains("\r\nid: "))
            await connection.close()
        }
    }

    @Test("a stream request as a connection's first that fails gets its JSON error and the connection closes")
    func failedStreamAsFirstRequest() async throws {
        try await withStack { stack in
            let api = stack.api()
            let authorization = "Authorization: Bearer \(try #require(api.token))\r\n"
            let unknown = try await RawConnection.open(port: stack.node.port)
            try await unknown.send("GET /chats/sse/\(UUID()) HTTP/1.1\r\nHost: herald\r\n\(authorization)\r\n")
            #expect(await unknown.waitForClose(timeout: .seconds(10)))
            #expect(unknown.received.hasPrefix("HTTP/1.1 404 Not Found\r\n"), "\(unknown.received)")
            #expect(unknown.received.contains(#""code":"not_found""#))

            let anonymous = try await RawConnection.open(port: stack.node.port)
            try await anonymous.send("GET /chats/sse/\(UUID()) HTTP/1.1\r\nHost: herald\r\n\r\n")
            #expect(await anonymous.waitForClose(timeout: .seconds(10)))
            #expect(anonymous.received.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"), "\(anonymous.received)")

            // A connection that asked nothing and leaves is forgotten at once: no task waits for its request.
            let silent = try await RawConnection.open(port: stack.node.port)
            await silent.close()
            try await eventually("every connection closed") { try await api.metric("herald_connections_open") == 1 }
        }
    }
}
