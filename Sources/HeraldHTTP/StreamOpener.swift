import Foundation
import HeraldCore
import HTTPTypes
import Logging
import NIOCore

/// Opening a thread's stream for a user, the same for every transport (an SSE response, a WebSocket's
/// subscription): the owner check, the subscription, the resume decision, and the start on the channel's loop.
struct StreamOpener: Sendable {
    let store: ChatStore
    let hub: FanoutHub
    let replayer: LogReplayer
    let configuration: HeraldConfiguration
    /// Opens the whole way in flight, which `StreamRoute.openNow` lets streams of the same thread wait for.
    let openings = ThreadOpenings()

    /// Where a client that sent `lastEventID` (a `Last-Event-ID`) is; `0` means from the start of the log.
    static func start(lastEventID text: String?) -> StreamConnection.Start {
        guard let text, !text.isEmpty else { return .live }
        guard let id = StreamID(text) else { return .malformed }
        return .after(id)
    }

    /// The streams `user` may hold on this node at once.
    func quota(of user: String) -> FanoutHub.UserQuota {
        .init(user: user, limit: configuration.maxStreamsPerUser)
    }

    /// Opens `thread`'s stream for `user` on `channel`, and begins it on the channel's event loop with the sink
    /// `attach` returns there. A thread another user owns is `NotFound`, like a missing one.
    func open(
        thread: UUID, user: String, start: StreamConnection.Start, heartbeat: StreamConnection.Heartbeat,
        quota: FanoutHub.UserQuota?, channel: any Channel, logger: Logger,
        attach: @escaping @Sendable (StreamConnection) throws -> any StreamSink
    ) async throws -> StreamConnection {
        openings.begin(thread)
        defer { openings.end(thread) }
        // A thread watched here already needs no PostgreSQL read: its owner never changes, and its deletion
        // reaches this node's subscription.
        if let owner = hub.knownOwner(of: thread) {
            guard owner == user else { throw NotFound(what: "thread") }
        } else {
            guard try await store.threadExists(thread, owner: user) else { throw NotFound(what: "thread") }
        }
        // Subscribed before anything is read from the log: frames published from here on are queued.
        let (connection, logPosition) = try await hub.open(
            thread: thread, quota: quota,
            limits: .init(maxFrames: configuration.streamQueueMaxFrames, maxBytes: configuration.streamQueueMaxBytes),
            eventLoop: channel.eventLoop
        )
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
        let beginning = self.beginning(start, baseline: baseline, heartbeat: heartbeat, logger: logger)
        do {
            // From here the stream runs on the channel's event loop.
            try await channel.eventLoop.submit {
                guard channel.isActive else { throw ChannelError.ioOnClosedChannel }
                connection.begin(sink: try attach(connection), beginning)
            }.get()
        } catch {
            // The client left (or the transport refused the stream) before it began.
            connection.end(.clientGone)
            throw error
        }
        return connection
    }

    /// `open` without suspending, on `eventLoop` (the client connection's), for a thread a stream on this node watches already:
    /// its owner known, its channel subscribed, its log position known (unless the client resumes from an id).
    /// nil, with nothing opened, for anything else: `open` then does the whole of it (or says what is wrong).
    func openNow(
        thread: UUID, user: String, start: StreamConnection.Start, heartbeat: StreamConnection.Heartbeat,
        quota: FanoutHub.UserQuota?, eventLoop: any EventLoop, logger: Logger, attach: (StreamConnection) throws -> any StreamSink
    ) -> StreamConnection? {
        let resumes = if case .after = start { true } else { false }
        guard hub.knownOwner(of: thread) == user,
              let (connection, logPosition) = hub.openNow(
                  thread: thread, quota: quota,
                  limits: .init(maxFrames: configuration.streamQueueMaxFrames, maxBytes: configuration.streamQueueMaxBytes),
                  eventLoop: eventLoop, needsLogPosition: !resumes
              )
        else { return nil }
        hub.rememberOwner(user, of: connection)
        // As in `open`: a resume starts after the client's id, anything else from the log's newest id.
        let baseline = resumes ? StreamID.zero : logPosition ?? .zero
        do {
            connection.begin(sink: try attach(connection), beginning(start, baseline: baseline, heartbeat: heartbeat, logger: logger))
        } catch {
            connection.end(.clientGone)
            return nil
        }
        return connection
    }

    private func beginning(
        _ start: StreamConnection.Start, baseline: StreamID, heartbeat: StreamConnection.Heartbeat, logger: Logger
    ) -> StreamConnection.Beginning {
        .init(
            start: start, baseline: baseline, heartbeat: heartbeat, replayer: replayer, logger: logger,
            reconnectSpreadSeconds: configuration.drainSeconds
        )
    }
}
