import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

struct LoadError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Where Herald listens: parsed from `--url` once, resolved once.
struct Target: Sendable {
    let host: String
    let port: Int
    let address: SocketAddress

    init(url: String) throws {
        var rest = Substring(url)
        guard rest.hasPrefix("http://") else { throw LoadError("--url must start with http:// (got \(url))") }
        rest = rest.dropFirst("http://".count)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        let host: Substring, port: Int
        if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let value = Int(rest[rest.index(after: colon)...]), (1...65535).contains(value) else {
                throw LoadError("bad port in --url \(url)")
            }
            port = value
        } else {
            (host, port) = (rest, 80)
        }
        guard !host.isEmpty else { throw LoadError("no host in --url \(url)") }
        self.host = String(host)
        self.port = port
        self.address = try SocketAddress.makeAddressResolvingHost(self.host, port: port)
    }

    var hostHeader: String { port == 80 ? host : "\(host):\(port)" }
}

/// Monotonic nanoseconds (CLOCK_MONOTONIC): send and receive stamps are taken in this one process.
enum Now {
    static func nanos() -> UInt64 { NIODeadline.now().uptimeNanoseconds }
}

/// A keep-alive HTTP/1.1 client connection used one request at a time (no pipelining).
enum HTTP {
    typealias Connection = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
    typealias Inbound = NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    typealias Outbound = NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>

    struct Reply: Sendable {
        let status: HTTPResponseStatus
        let body: ByteBuffer

        var text: String { String(buffer: body) }
    }

    static func connect(_ target: Target, group: any EventLoopGroup) async throws -> Connection {
        try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(10))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(to: target.address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
    }

    static func exchange(
        _ method: HTTPMethod, _ uri: String, json body: ByteBuffer?, host: String, headers: [(String, String)] = [],
        inbound: inout Inbound, outbound: Outbound
    ) async throws -> Reply {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        head.headers.add(name: "Host", value: host)
        head.headers.add(contentsOf: headers)
        var parts: [HTTPClientRequestPart] = []
        if let body {
            head.headers.add(name: "Content-Type", value: "application/json")
            head.headers.add(name: "Content-Length", value: String(body.readableBytes))
            parts = [.head(head), .body(.byteBuffer(body)), .end(nil)]
        } else {
            parts = [.head(head), .end(nil)]
        }
        try await outbound.write(contentsOf: parts)
        var status: HTTPResponseStatus?
        var collected = ByteBuffer()
        while let part = try await inbound.next() {
            switch part {
            case .head(let responseHead):
                status = responseHead.status
            case .body(var chunk):
                collected.writeBuffer(&chunk)
            case .end:
                guard let status else { throw LoadError("\(method) \(uri): response without a head") }
                return Reply(status: status, body: collected)
            }
        }
        throw LoadError("\(method) \(uri): connection closed before the response ended")
    }

    /// One request on its own connection (set-up and clean-up, not the measured path).
    static func oneShot(
        _ method: HTTPMethod, _ uri: String, json: String?, headers: [(String, String)] = [], target: Target,
        group: any EventLoopGroup
    ) async throws -> Reply {
        let connection = try await connect(target, group: group)
        let host = target.hostHeader
        return try await connection.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            return try await exchange(
                method, uri, json: json.map { ByteBuffer(string: $0) }, host: host, headers: headers, inbound: &iterator, outbound: outbound
            )
        }
    }
}

/// A string at `path` in a JSON object answer, e.g. `["run", "id"]`.
func jsonString(_ body: ByteBuffer, _ path: String...) -> String? {
    jsonString(in: try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)), path)
}

func jsonString(in object: Any?, _ path: [String]) -> String? {
    var value = object
    for key in path {
        value = (value as? [String: Any])?[key]
    }
    return value as? String
}

/// The path and query of an absolute http URL (`http://host:port/path?query` → `/path?query`).
func pathAndQuery(of url: String) -> String? {
    guard let scheme = url.range(of: "://") else { return nil }
    let rest = url[scheme.upperBound...]
    guard let slash = rest.firstIndex(of: "/") else { return nil }
    return String(rest[slash...])
}
