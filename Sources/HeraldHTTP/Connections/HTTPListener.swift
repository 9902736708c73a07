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

/// Herald's public listener, in place of Hummingbird's `Server`: it accepts connections on the event loops and sets
/// each one up (`LimitedHTTPChannel`) right there, and only a connection that Hummingbird serves gets a task.
///
/// Why: Hummingbird's server hands every accepted connection, through an async sequence, to a task of its own,
/// which for a stream (or an engine's webhooks) only waits to learn that it is not needed. For opening streams that
/// hand-over was a fifth of the CPU (the sequence's locking, a wake-up of a concurrency thread per connection,
/// futures on the accepting loop).
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
        let quiescing = ServerQuiescingHelper(group: eventLoopGroup)
        let connections = self.connections
        let logger = self.logger
        let server = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                connections.setup(channel: channel, logger: logger).map { connection in
                    connections.serveWhenNeeded(connection, logger: logger)
                }
            }
            .bind(host: host, port: port)
            .get()
        logger.info("Server started and listening on \(host):\(server.localAddress?.port ?? port)")
        let allClosed = server.eventLoop.makePromise(of: Void.self)
        // A listening socket that closes on its own (it should not) ends the service too.
        server.closeFuture.whenComplete { _ in quiescing.initiateShutdown(promise: allClosed) }
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await allClosed.futureResult.get()
            } onGracefulShutdown: {
                quiescing.initiateShutdown(promise: allClosed)
            }
        } onCancel: {
            allClosed.fail(CancellationError())
        }
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
