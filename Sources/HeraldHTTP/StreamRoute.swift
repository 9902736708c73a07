import Foundation
import HeraldCore
import HTTPTypes
import Hummingbird
import Metrics
import Logging
import NIOCore
import ServiceLifecycle

/// `GET /chats/sse/{thread_id}`: one thread's frames as `text/event-stream`.
struct StreamRoute {
    let store: ChatStore
    let hub: FanoutHub
    let replayer: LogReplayer
    let drain: StreamDrain
    let configuration: HeraldConfiguration

    func register(on chats: RouterGroup<HeraldRequestContext>) {
        chats.get("sse/:thread_id", use: stream)
    }

    /// Where the client says it is: the `Last-Event-ID` header (browser reconnects) or `?last_event_id=` (first
    /// connect after a page reload). `0` means from the start of the log.
    static func start(of request: Request) -> StreamConnection.Start {
        let header = request.headers[HTTPField.Name("Last-Event-ID")!]
        let query = request.uri.queryParameters.get("last_event_id").map { String($0) }
        guard let text = header ?? query else { return .live }
        if text.isEmpty { return .live }
        guard let id = StreamID(text) else { return .malformed }
        return .after(id)
    }

    /// `?heartbeat=event` asks for heartbeats `EventSource` can see (the chat page watches them); the default is
    /// the comment.
    func heartbeatStyle(of request: Request) throws -> StreamConnection.Heartbeat {
        switch request.uri.queryParameters.get("heartbeat") {
        case nil, "comment": .comment
        case "event": .event(intervalSeconds: configuration.heartbeatSeconds)
        default: throw APIError.invalid("heartbeat must be comment or event")
        }
    }

    @Sendable func stream(_ request: Request, context: HeraldRequestContext) async throws -> Response {
        if drain.isDraining {
            var error = APIError(.serviceUnavailable, "draining", "this node is shutting down; reconnect to another")
            error.headers[.retryAfter] = "1"
            throw error
        }
        let thread = try context.parameters.uuid("thread_id")
        let heartbeats = try heartbeatStyle(of: request)
        let user = try context.requireUser()
        // A thread watched here already needs no PostgreSQL read: its owner never changes, and its deletion
        // reaches this node's subscription.
        if let owner = hub.knownOwner(of: thread) {
            guard owner == user else { throw NotFound(what: "thread") }
        } else {
            guard try await store.threadExists(thread, owner: user) else { throw NotFound(what: "thread") }
        }
        let start = Self.start(of: request)
        let channel = context.channel
        // Subscribed before anything is read from the log: frames published from here on are queued.
        let connection: StreamConnection
        let logPosition: StreamID?
        do {
            (connection, logPosition) = try await hub.open(
                thread: thread, user: user, maxPerUser: configuration.maxStreamsPerUser,
                limits: .init(maxFrames: configuration.streamQueueMaxFrames, maxBytes: configuration.streamQueueMaxBytes),
                eventLoop: channel.eventLoop
            )
        } catch let error as FanoutHub.TooManyStreams {
            var apiError = APIError(.tooManyRequests, "too_many_streams", "at most \(error.limit) open streams per user")
            apiError.headers[.retryAfter] = "5"
            throw apiError
        }
        hub.rememberOwner(user, of: connection)
        // A resume starts after the client's id; anything else (live, or a malformed id answered with resync)
        // counts from the log's newest id, where a catch-up after a subscriber outage begins.
        let baseline: StreamID
        do {
            if case .after = start {
                baseline = .zero
            } else if let logPosition {
                // Known on this node: another stream watches the thread.
                baseline = logPosition
            } else {
                baseline = try await replayer.latestID(of: thread)
                hub.rememberLogPosition(baseline, of: thread)
            }
        } catch {
            connection.end(.clientGone)
            throw error
        }
        let beginning = StreamConnection.Beginning(
            start: start, baseline: baseline, heartbeat: heartbeats, replayer: replayer, logger: context.logger,
            reconnectSpreadSeconds: configuration.drainSeconds
        )
        do {
            // From here the stream runs on the channel's event loop; what it writes before the response head
            // has gone out waits for it in the outlet.
            try await channel.eventLoop.submit {
                guard channel.isActive else { throw ChannelError.ioOnClosedChannel }
                connection.begin(sink: try StreamOutlet.install(for: connection, on: channel), beginning)
            }.get()
        } catch {
            // The client left before its stream began.
            connection.end(.clientGone)
            throw error
        }
        Self.opened.increment()

        let headers: HTTPFields = [
            .contentType: "text/event-stream",
            .cacheControl: "no-cache",
            HTTPField.Name("X-Accel-Buffering")!: "no",
        ]
        if let handoff = context.handoff {
            // Run by `StreamHandoff`: it writes this head and ends the response when the stream ends; no task waits.
            handoff.hold(connection)
            return Response(status: .ok, headers: headers)
        }
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody { writer in
                let reason = await withTaskCancellationHandler {
                    await withGracefulShutdownHandler {
                        await connection.ended()
                    } onGracefulShutdown: {
                        connection.end(.shutdown)
                    }
                } onCancel: {
                    connection.end(.clientGone)
                }
                Self.count(reason)
                try await writer.finish(nil)
            }
        )
    }

    private static let opened = Counter(label: "herald_sse_connections_total")
    private static let disconnects = MetricHandles { Counter(label: "herald_sse_disconnects_total", dimensions: [("reason", $0)]) }

    /// Counts a stream's end, except the usual one (the client left).
    static func count(_ reason: StreamConnection.EndReason) {
        guard reason != .clientGone else { return }
        Self.disconnects[reason.rawValue].increment()
    }
}
