import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Testing

@testable import HeraldHTTP

/// `StreamRequest(head:)` reads a connection's first bytes without the HTTP decoder; whatever it takes must be
/// exactly what NIO's decoder (the one the full pipeline uses) reads from the same bytes.
@Suite("stream requests read from raw bytes agree with the HTTP decoder")
struct StreamRequestTests {
    static let thread = "5f0c7f43-7a8e-4a41-9f5c-2f6f2b1f4f0e"

    @Test("what browsers and curl send is taken, with the token, Last-Event-ID and the query")
    func plainRequests() throws {
        let browser = """
            GET /chats/sse/\(Self.thread)?access_token=abc.def.ghi&heartbeat=event HTTP/1.1\r
            Host: herald.example:8080\r
            User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0\r
            Accept: text/event-stream\r
            Cache-Control: no-cache\r
            last-event-id:   1733000000000-0\t \r
            Accept-Encoding: gzip, deflate, br\r
            Connection: keep-alive\r
            \r

            """
        #expect(
            StreamRequest(head: ByteBuffer(string: browser))
                == StreamRequest(target: "/chats/sse/\(Self.thread)?access_token=abc.def.ghi&heartbeat=event", lastEventID: "1733000000000-0")
        )
        let curl = "GET /chats/sse/\(Self.thread) HTTP/1.1\r\nHost: h\r\nAUTHORIZATION: Bearer t0k\r\nAccept: */*\r\n\r\n"
        #expect(StreamRequest(head: ByteBuffer(string: curl)) == StreamRequest(target: "/chats/sse/\(Self.thread)", authorization: "Bearer t0k"))
        for request in [browser, curl] {
            try #expect(StreamRequest(head: ByteBuffer(string: request)) == Self.decoded(ByteBuffer(string: request)))
        }
    }

    @Test("anything else is left to the decoder", arguments: [
        "GET /chats/sse/x HTTP/1.0\r\nHost: h\r\n\r\n",
        "POST /chats/sse/x HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /chats/threads HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nOrigin: https://a.example\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nLast-Event-ID: 1-0\r\nlast-event-id: 2-0\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nHost: h\r\n\r\nGET /chats/sse/x HTTP/1.1\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nHost: h\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nHost: h\r\n\r",
        "GET /chats/sse/x HTTP/1.1\nHost: h\n\n",
        "GET /chats/sse/x HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nHost : h\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\n: h\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nX-A: caf\u{e9}\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nX-A: a\u{7f}\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
        "GET /chats/sse/\u{e9} HTTP/1.1\r\n\r\n",
        "GET  /chats/sse/x HTTP/1.1\r\n\r\n",
        "get /chats/sse/x HTTP/1.1\r\n\r\n",
        "GET /chats/sse/x HTTP/1.1 \r\n\r\n",
    ])
    func declined(_ request: String) {
        #expect(StreamRequest(head: ByteBuffer(string: request)) == nil)
    }

    @Test("a head longer than the limit is the decoder's")
    func longHead() {
        let filler = String(repeating: "a", count: StreamRequest.maxHeadBytes)
        #expect(StreamRequest(head: ByteBuffer(string: "GET /chats/sse/x HTTP/1.1\r\nX-Filler: \(filler)\r\n\r\n")) == nil)
    }

    @Test("a stream request's head in pieces: every start of it waits for more, the whole is complete; anything else is not waited for")
    func headProgress() {
        let head = Array("GET /chats/sse/\(Self.thread) HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t0k\r\n\r\n".utf8)
        for end in 1..<head.count {
            #expect(StreamRequest.progress(of: ByteBuffer(bytes: head[..<end])) == .incomplete, "\(end) bytes")
        }
        #expect(StreamRequest.progress(of: ByteBuffer(bytes: head)) == .complete)
        #expect(StreamRequest(head: ByteBuffer(bytes: head)) == StreamRequest(target: "/chats/sse/\(Self.thread)", authorization: "Bearer t0k"))
        // What follows a complete head is `init(head:)`'s to decline.
        #expect(StreamRequest.progress(of: ByteBuffer(bytes: head + Array("GET /".utf8))) == .complete)

        for other in ["P", "GET /h", "GET /healthz HTTP/1.1\r\n", "POST /webhook/chat-response HTTP/1.1\r\n\r\n", "\r\n"] {
            #expect(StreamRequest.progress(of: ByteBuffer(string: other)) == .other, "\(other.debugDescription)")
        }
        let filler = String(repeating: "a", count: StreamRequest.maxHeadBytes)
        #expect(StreamRequest.progress(of: ByteBuffer(string: "GET /chats/sse/x HTTP/1.1\r\nX-Filler: \(filler)")) == .other)
    }

    /// Random damage to plain requests: every one still taken is read exactly as the decoder reads it.
    @Test("damaged requests: whatever is taken, the decoder reads the same")
    func damaged() throws {
        let originals = [
            "GET /chats/sse/\(Self.thread)?access_token=a.b.c HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 17-3\r\nAccept: text/event-stream\r\n\r\n",
            "GET /chats/sse/\(Self.thread) HTTP/1.1\r\nauthorization: Bearer x.y.z\r\nConnection: keep-alive\r\n\r\n",
        ].map { Array($0.utf8) }
        let alphabet = Array("GET /:\r\n\t -aAzZ0?&=%HTP.1,;\"\0\u{7f}".utf8) + [0x80, 0xC3, 0xFF]
        var generator = SystemRandomNumberGenerator()
        var taken = 0
        for round in 0..<3000 {
            var bytes = originals[round % originals.count]
            for _ in 0...Int.random(in: 0...2, using: &generator) {
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[index] = alphabet.randomElement(using: &generator)!
                case 1: bytes.insert(alphabet.randomElement(using: &generator)!, at: index)
                default: bytes.remove(at: index)
                }
            }
            let buffer = ByteBuffer(bytes: bytes)
            guard let request = StreamRequest(head: buffer) else { continue }
            taken += 1
            let decoded = try Self.decoded(buffer)
            #expect(decoded == request, "\(String(decoding: bytes, as: UTF8.self).debugDescription)")
        }
        // Damage that misses what matters (a header's value, the query) leaves the request plain.
        #expect(taken > 100)
    }

    /// What the full pipeline reads from `bytes`: one GET HTTP/1.1 head, no body and nothing after it, none of the
    /// headers that send a request elsewhere, read as `RequestHandoff` reads it; nil for anything else.
    static func decoded(_ bytes: ByteBuffer) throws -> StreamRequest? {
        let raw = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder()))
        let converting = EmbeddedChannel()
        try converting.pipeline.syncOperations.addHandlers(ByteToMessageHandler(HTTPRequestDecoder()), HTTP1ToHTTPServerCodec(secure: false))
        defer {
            _ = try? raw.finish()
            _ = try? converting.finish()
        }
        do {
            try raw.writeInbound(bytes)
            try converting.writeInbound(bytes)
        } catch {
            return nil
        }
        guard case .head(let nioHead)? = try raw.readInbound(as: HTTPServerRequestPart.self),
              case .end? = try raw.readInbound(as: HTTPServerRequestPart.self),
              try raw.readInbound(as: HTTPServerRequestPart.self) == nil,
              nioHead.method == .GET, nioHead.version == .http1_1,
              !["content-length", "transfer-encoding", "upgrade", "expect"].contains(where: nioHead.headers.contains(name:)),
              case .head(let head)? = try converting.readInbound(as: HTTPRequestPart.self)
        else { return nil }
        return StreamRequest(head)
    }
}
