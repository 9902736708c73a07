import Foundation
import HeraldCore
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Metrics
import Logging
import NIOCore
import ServiceLifecycle

/// `GET /chats/sse/{thread_id}`: one thread's frames as `text/event-stream`.
struct StreamRoute {
    let opener: StreamOpener
    let drain: StreamDrain
    let configuration: HeraldConfiguration
    let tokens: UserTokens

    func register(on chats: RouterGroup<HeraldRequestContext>) {
        chats.get("sse/:thread_id", use: stream)
    }

    /// Where the client says it is: the `Last-Event-ID` header (browser reconnects) or `?last_event_id=` (first
    /// connect after a page reload). `0` means from the start of the log.
    static func start(of request: Request) -> StreamConnection.Start {
        let header = request.headers[StreamRequest.lastEventIDField]
        let query = request.uri.queryParameters.get("last_event_id").map { String($0) }
        return StreamOpener.start(lastEventID: header ?? query)
    }

    /// `?heartbeat=event` asks for heartbeats `EventSource` can see (the chat page watches them); the default is
    /// the comment.
    func heartbeatStyle(of request: Request) throws -> StreamConnection.Heartbeat {
        guard let style = heartbeatStyle(request.uri.queryParameters.get("heartbeat")) else {
            throw APIError.invalid("heartbeat must be comment or event")
        }
        return style
    }

    private func heartbeatStyle(_ asked: String?) -> StreamConnection.Heartbeat? {
        switch asked {
        case nil, "comment": .comment
        case "event": .event(intervalSeconds: configuration.heartbeatSeconds)
        default: nil
        }
    }

    /// What opening a stream on its connection's event loop came to.
    enum OpenNow {
        case opened(HTTPResponse, StreamConnection)
        /// Another stream of the thread is opening the whole way (`ThreadOpenings`): asked again once that is over
        /// (the future, on the connection's loop), this one most likely opens on the loop.
        case afterOpening(EventLoopFuture<Void>)
        /// Not on the loop: the router opens it, or answers what is wrong. With the thread's opening claimed for it
        /// when the request may well open the thread (`ThreadOpenings.waitOrClaim`): the caller releases the claim
        /// once the request is answered or its connection closed.
        case declined(ThreadOpenings.Claim?)
    }

    /// `stream` without suspending, for a request on its connection's event loop: a thread a stream on this node
    /// watches already (`StreamOpener.openNow`), asked for with a token verified a moment ago (in the
    /// `Authorization` header or the `access_token` query parameter), no `Origin` (CORS) and valid parameters,
    /// while the node is not draining. What the router's middleware would record, it records (the stream count,
    /// the debug line). Declined, with nothing opened, for anything else: the request then goes through the
    /// router, which opens it the whole way or answers what is wrong. A well-formed request for a thread not
    /// watched here (or with a token not verified yet) waits for another stream of the thread opening the whole
    /// way (if `mayWait`), or when there is none, is declined with that opening claimed for it.
    func openNow(
        _ request: StreamRequest, mayWait: Bool, on eventLoop: any EventLoop, logger: Logger,
        attach: (StreamConnection) throws -> any StreamSink
    ) -> OpenNow {
        let start = ContinuousClock.now
        guard !drain.isDraining else { return .declined(nil) }
        let uri = URI(request.target)
        guard uri.path.hasPrefix(Self.pathPrefix), let thread = UUID(text: uri.path.dropFirst(Self.pathPrefix.utf8.count)) else {
            return .declined(nil)
        }
        let query = uri.queryParameters
        let token: String
        if let authorization = request.authorization {
            guard authorization.utf8.count > 7, authorization.utf8.prefix(7).lazy.map({ $0 | 0x20 }).elementsEqual("bearer ".utf8) else {
                return .declined(nil)
            }
            token = String(authorization.utf8.dropFirst(7))!
        } else if let fromQuery = query.get("access_token") {
            token = String(fromQuery)
        } else {
            return .declined(nil)
        }
        guard let heartbeat = heartbeatStyle(query.get("heartbeat").map { String($0) }) else { return .declined(nil) }
        // A token not verified yet (on a node that has just started, say) is verified by the router, and a thread not
        // watched here yet is opened there: once, for the thread's streams that arrive meanwhile.
        guard let user = tokens.knownUser(ofToken: token),
              let connection = opener.openNow(
                  thread: thread, user: user,
                  start: StreamOpener.start(lastEventID: request.lastEventID ?? query.get("last_event_id").map { String($0) }),
                  heartbeat: heartbeat, quota: opener.quota(of: user), eventLoop: eventLoop, logger: logger, attach: attach
              )
        else {
            guard mayWait else { return .declined(opener.openings.claim(thread)) }
            switch opener.openings.waitOrClaim(thread, on: eventLoop) {
            case .wait(let opened): return .afterOpening(opened)
            case .claimed(let claim): return .declined(claim)
            }
        }
        Self.opened.increment()
        Self.openedOnLoop.increment()
        Self.requests.record(since: start, logger: logger)
        return .opened(HTTPResponse(status: .ok, headerFields: Self.headers), connection)
    }

    static let pathPrefix = "/chats/sse/"
    /// What the router's middleware records of an opened stream.
    private static let requests = RouteMetrics(route: "/chats/sse/{thread_id}", method: .get, status: .ok)
    private static let headers: HTTPFields = [
        .contentType: "text/event-stream",
        .cacheControl: "no-cache",
        HTTPField.Name("X-Accel-Buffering")!: "no",
    ]

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
        let headers = Self.headers
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
    private static let openedOnLoop = Counter(label: "herald_sse_opened_on_loop_total")
    /// Of those, the ones whose connection never got an HTTP pipeline (`LeanStreamHandler`).
    static let openedWithoutPipeline = Counter(label: "herald_sse_opened_without_pipeline_total")
    private static let disconnects = MetricHandles { Counter(label: "herald_sse_disconnects_total", dimensions: [("reason", $0)]) }

    /// Counts a stream's end, except the usual one (the client left).
    static func count(_ reason: StreamConnection.EndReason) {
        guard reason != .clientGone else { return }
        Self.disconnects[reason.rawValue].increment()
    }
}
