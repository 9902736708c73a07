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
    let configuration: HeraldConfiguration

    func register(on chats: RouterGroup<HeraldRequestContext>) {
        chats.get("sse/:thread_id", use: stream)
    }

    /// Where the client says it is: the `Last-Event-ID` header (browser reconnects) or `?last_event_id=` (first
    /// connect after a page reload). `0` means from the start of the log.
    static func start(of request: Request) -> StreamSession.Start {
        let header = request.headers[HTTPField.Name("Last-Event-ID")!]
        let query = request.uri.queryParameters.get("last_event_id").map { String($0) }
        guard let text = header ?? query else { return .live }
        if text.isEmpty { return .live }
        guard let id = StreamID(text) else { return .malformed }
        return .after(id)
    }

    /// `?heartbeat=event` asks for heartbeats `EventSource` can see (the chat page watches them); the default is
    /// the comment.
    func heartbeatStyle(of request: Request) throws -> StreamSession.Heartbeat {
        switch request.uri.queryParameters.get("heartbeat") {
        case nil, "comment": .comment
        case "event": .event(intervalSeconds: configuration.heartbeatSeconds)
        default: throw APIError.invalid("heartbeat must be comment or event")
        }
    }

    @Sendable func stream(_ request: Request, context: HeraldRequestContext) async throws -> Response {
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
        // Subscribed before anything is read from the log: frames published from here on are queued.
        let connection: StreamConnection
        do {
            connection = try await hub.open(
                thread: thread, user: user, maxPerUser: configuration.maxStreamsPerUser,
                limits: .init(maxFrames: configuration.streamQueueMaxFrames, maxBytes: configuration.streamQueueMaxBytes)
            )
        } catch let error as FanoutHub.TooManyStreams {
            var apiError = APIError(.tooManyRequests, "too_many_streams", "at most \(error.limit) open streams per user")
            apiError.headers[.retryAfter] = "5"
            throw apiError
        }
        // A resume starts after the client's id; anything else (live, or a malformed id answered with resync)
        // counts from the log's newest id, where a catch-up after a subscriber outage begins.
        let baseline: StreamID
        do {
            if case .after = start {
                baseline = .zero
            } else {
                baseline = try await replayer.latestID(of: thread)
            }
        } catch {
            connection.end(.clientGone)
            throw error
        }
        let channel = context.channel
        do {
            try await ClientHangupObserver.install(on: channel) { connection.end(.clientGone) }
        } catch {
            // The channel is already closed: the client left before its stream began.
            connection.end(.clientGone)
            throw error
        }
        // A slow consumer's writer may be stuck in a write to a socket nobody reads: closing the channel fails
        // that write, so the client is really disconnected (and counted) rather than merely unregistered.
        connection.whenEnded { reason in
            if reason == .slowConsumer { channel.close(promise: nil) }
        }
        let interval = TimeAmount.nanoseconds(Int64(configuration.heartbeatSeconds * 1_000_000_000))
        let heartbeat = channel.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            connection.pushHeartbeat()
        }
        let session = StreamSession(
            connection: connection, start: start, baseline: baseline, replayer: replayer, logger: context.logger,
            heartbeat: heartbeats
        )
        Counter(label: "herald_sse_connections_total").increment()

        return Response(
            status: .ok,
            headers: [
                .contentType: "text/event-stream",
                .cacheControl: "no-cache",
                HTTPField.Name("X-Accel-Buffering")!: "no",
            ],
            body: ResponseBody { writer in
                var session = session
                defer {
                    heartbeat.cancel()
                    connection.end(.clientGone)
                }
                await withGracefulShutdownHandler {
                    while let chunks = await session.nextChunks() {
                        do {
                            // The usual case, one frame, skips the sequence write's array of parts.
                            if chunks.count == 1 {
                                try await writer.write(chunks[0])
                            } else {
                                try await writer.write(contentsOf: chunks)
                            }
                        } catch {
                            connection.end(.clientGone)
                            return
                        }
                    }
                } onGracefulShutdown: {
                    connection.end(.shutdown)
                }
                if let reason = connection.endReason, reason != .clientGone {
                    Counter(label: "herald_sse_disconnects_total", dimensions: [("reason", reason.rawValue)]).increment()
                }
                try await writer.finish(nil)
            }
        )
    }
}
