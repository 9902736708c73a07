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
    let opener: StreamOpener
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
        return StreamOpener.start(lastEventID: header ?? query)
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
        if drain.isDraining { throw APIError.draining }
        let thread = try context.parameters.uuid("thread_id")
        let heartbeats = try heartbeatStyle(of: request)
        let user = try context.requireUser()
        let channel = context.channel
        let connection = try await opener.open(
            thread: thread, user: user, start: Self.start(of: request), heartbeat: heartbeats, quota: opener.quota(of: user),
            channel: channel, logger: context.logger
        ) { connection in
            // What the stream writes before the response head has gone out waits for it in the outlet.
            try StreamOutlet.install(for: connection, on: channel)
        }
        Self.opened.increment()

        let headers: HTTPFields = [
            .contentType: "text/event-stream",
            .cacheControl: "no-cache",
            HTTPField.Name("X-Accel-Buffering")!: "no",
        ]
        if let handoff = context.handoff {
            // Run by `RequestHandoff`: it writes this head and ends the response when the stream ends; no task waits.
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
