import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// Herald's public listener, in place of Hummingbird's `Server`: a listening socket per event loop, each accepting
/// connections that stay on its loop, where `LimitedHTTPChannel` sets each one up; only a connection that Hummingbird
/// serves gets a task.
///
/// Why: Hummingbird's server hands every accepted connection, through an async sequence, to a task of its own,
/// which for a stream (or an engine's webhooks) only waits to learn that it is not needed; that hand-over was a fifth
/// of the CPU of opening a stream. And with one listening socket, the loop that accepts hands every other connection
/// to another loop and waits for its registration there (two cross-thread wake-ups per connection, and another at its
/// close for the list of open connections). The sockets share the port through `SO_REUSEPORT`; the kernel spreads
/// the connections over them. So that a second process cannot share the port unnoticed (the option lets any socket
/// of the same user join), the port is first bound without it, which fails if anything listens there.
///
/// Shutdown is Hummingbird's: on a graceful shutdown it stops accepting, tells every open connection to quiesce
/// (`ChannelShouldQuiesceEvent`: streams end, HTTP connections close after their request) and returns once they have
/// all closed, or at once if the service is cancelled.
struct HTTPListener: Service {
    let connections: LimitedHTTPChannel
    let host: String
    let port: Int
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger

    func run() async throws {
        let loops = Array(eventLoopGroup.makeIterator())
        if port != 0 { try await Self.claim(host: host, port: port, on: loops[0]) }
        var listeners = [try await listen(on: loops[0], port: port)]
        let boundPort = listeners[0].port
        for loop in loops.dropFirst() {
            do {
                listeners.append(try await listen(on: loop, port: boundPort))
            } catch {
                for listener in listeners { try? await listener.channel.close() }
                throw error
            }
        }
        logger.info("Server started and listening on \(host):\(boundPort)")
        let allClosed = eventLoopGroup.any().makePromise(of: Void.self)
        let shutDown: @Sendable () -> Void = { [listeners] in
            let everyListener = listeners.map { listener in
                let closed = listener.channel.eventLoop.makePromise(of: Void.self)
                listener.quiescing.initiateShutdown(promise: closed)
                return closed.futureResult
            }
            allClosed.completeWith(EventLoopFuture.andAllComplete(everyListener, on: allClosed.futureResult.eventLoop))
        }
        // A listening socket that closes on its own (it should not) ends the service too.
        for listener in listeners { listener.channel.closeFuture.whenComplete { _ in shutDown() } }
        try await Self.wait(for: allClosed, shutDown: shutDown)
    }

    /// Returns once `allClosed` is complete, which `shutDown` brings about when a graceful shutdown begins; a
    /// cancelled service stops waiting at once.
    static func wait(for allClosed: EventLoopPromise<Void>, shutDown: @escaping @Sendable () -> Void) async throws {
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await allClosed.futureResult.get()
            } onGracefulShutdown: {
                shutDown()
            }
        } onCancel: {
            allClosed.fail(CancellationError())
        }
    }

    private struct Listener: Sendable {
        let channel: any Channel
        let quiescing: ServerQuiescingHelper
        var port: Int { channel.localAddress?.port ?? 0 }
    }

    /// A listening socket on `loop` whose connections stay on `loop`.
    private func listen(on loop: any EventLoop, port: Int) async throws -> Listener {
        let quiescing = ServerQuiescingHelper(group: loop)
        let connections = self.connections
        let logger = self.logger
        let channel = try await ServerBootstrap(group: loop)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            // A channel keeps its last read buffer for the next read, and a stream's client sends nothing after its
            // request: 1 KiB to start with (NIO's default is 2) holds a typical stream request's head, and every open
            // stream holds 1 KiB less. A longer head comes in more reads (`LeanStreamHandler` gathers them); the
            // buffer grows for connections that send more.
            .childChannelOption(
                ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536)
            )
            .childChannelInitializer { channel in
                connections.setup(channel: channel, logger: logger).map { connection in
                    connections.serveWhenNeeded(connection, logger: logger)
                }
            }
            .bind(host: host, port: port)
            .get()
        return Listener(channel: channel, quiescing: quiescing)
    }

    /// Binds `host:port` without `SO_REUSEPORT` and lets it go: fails (address in use) if anything listens there,
    /// a Herald node with its shared sockets included.
    static func claim(host: String, port: Int, on loop: any EventLoop) async throws {
        let probe = try await ServerBootstrap(group: loop)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port)
            .get()
        try await probe.close()
    }
}

/// What Hummingbird's `Application` does around the router for each request Hummingbird serves (Herald runs its own
/// listener, so not `Application.run`): a request id in the logger, a 500 for an error no middleware turned into a
/// response, the `Date` and `Server` headers.
enum ApplicationResponder {
    static func make(
        _ responder: RouterResponder<HeraldRequestContext>, logger: Logger, serverName: String, dates: HTTPDateCache
    ) -> HTTPChannelHandler.Responder {
        { request, writer, channel in
            var logger = logger
            logger[metadataKey: "hb.request.id"] = .stringConvertible(RequestID())
            let context = HeraldRequestContext(source: .init(channel: channel, logger: logger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch let error as HTTPParserError {
                // Hummingbird answers it (400) and closes the connection.
                throw error
            } catch {
                logger.debug("Unrecognised Error", metadata: ["error.type": "\(error)"])
                response = Response(status: .internalServerError)
            }
            response.headers[.date] = dates.now
            response.headers[.server] = serverName
            do {
                try await writer.write(response: response.head, body: response.body)
            } catch is HTTPParserError {
                // Not Hummingbird's to answer: a response has begun. The connection closes.
                throw ResponseInterrupted()
            }
        }
    }

    struct ResponseInterrupted: Error {}
}

/// The `Date` header's value (RFC 9110's IMF-fixdate), formatted once a second.
final class HTTPDateCache: Sendable {
    private let cached = NIOLockedValueBox<(second: Int, text: String)>((-1, ""))

    var now: String {
        let second = time(nil)
        return cached.withLockedValue { cache in
            if cache.second != second { cache = (second, Self.format(second)) }
            return cache.text
        }
    }

    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func format(_ seconds: Int) -> String {
        var time = seconds
        var parts = tm()
        gmtime_r(&time, &parts)
        func twoDigits(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(twoDigits(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(1900 + parts.tm_year) "
            + "\(twoDigits(parts.tm_hour)):\(twoDigits(parts.tm_min)):\(twoDigits(parts.tm_sec)) GMT"
    }
}
