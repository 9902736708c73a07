import Foundation
import HeraldCore
import HTTPTypes
import Logging
import Metrics
import NIOCore
import NIOWebSocket

/// One WebSocket client on its channel's event loop: any number of threads' streams (up to a limit) on one
/// socket, each a `StreamConnection` of the same hub as SSE, with the same resume, catch-up and slow-consumer
/// rules. A live event is turned into its WebSocket frame once per event loop (`OutgoingFrame.encoded(for:)`)
/// and written as it is to every socket there; the streams' frames, the replies and the pings all go out on the
/// channel from this handler, without a task per socket.
///
/// The protocol (docs/api.md): the client sends `subscribe`, `unsubscribe`, `send` and `ping`; the server sends
/// `event`, `subscribed`, `unsubscribed`, `ack`, `error` and `pong`. Pings every heartbeat interval; a client not
/// heard from for two is closed.
final class WebSocketSession: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    /// What a session needs, fixed when its upgrade is accepted.
    struct Setup: Sendable {
        let user: String
        let opener: StreamOpener
        let sender: MessageSender
        let limits: Limits
        let logger: Logger

        /// The socket holds one of the user's stream slots (taken by `WebSocketRoute`) until it closes; this gives
        /// it back when the session never started.
        func abandon() {
            opener.hub.releaseSlot(of: user)
        }
    }

    struct Limits: Sendable {
        var maxThreads: Int
        var maxMessageBytes: Int
        var maxJSONDepth: Int
        var pingInterval: TimeAmount
    }

    /// One thread's stream on this socket: the sink its `StreamConnection` writes to.
    private final class Subscription: StreamSink {
        let thread: UUID
        let connection: StreamConnection
        weak var session: WebSocketSession?

        init(thread: UUID, connection: StreamConnection, session: WebSocketSession) {
            self.thread = thread
            self.connection = connection
            self.session = session
        }

        var isWritable: Bool { session?.isWritable ?? false }

        func write(_ frame: OutgoingFrame) {
            let thread = self.thread
            // A live frame belongs to one thread, so every socket on the loop shares the frame's WebSocket bytes.
            let bytes = frame.encoded(for: ObjectIdentifier(WebSocketSession.self)) {
                WebSocketWire.textFrames(FrameMessage.messages(of: $0, thread: thread))
            }
            session?.write(bytes)
        }

        func flush() {
            session?.flush()
        }

        /// Only a slow consumer is closed by its stream: the whole socket goes, as it is the socket that is behind.
        func close() {
            session?.close(.unknown(1013), reason: "slow_consumer")
        }
    }

    private let setup: Setup
    private var context: ChannelHandlerContext?
    private var subscriptions: [UUID: Subscription] = [:]
    /// Subscriptions being opened; true once the client unsubscribed before it finished.
    private var opening: [UUID: Bool] = [:]
    private var writable = true
    private var needsFlush = false
    private var closing = false
    private var holdsSlot = true
    private var lastHeard = NIODeadline.now()
    private var pings: RepeatedTask?

    private init(setup: Setup) {
        self.setup = setup
    }

    /// Replaces the HTTP/1.1 handlers of `pipeline`, whose connection has just answered the upgrade, with the
    /// WebSocket frame decoder and a session; on the channel's event loop.
    static func install(_ setup: Setup, replacingHTTPOf pipeline: ChannelPipeline.SynchronousOperations, httpHandlers: [any RemovableChannelHandler]) throws {
        for handler in httpHandlers {
            pipeline.removeHandler(handler, promise: nil)
        }
        let session = WebSocketSession(setup: setup)
        try pipeline.addHandlers([
            ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: setup.limits.maxMessageBytes)),
            MaskedFramesOnly(),
            NIOWebSocketFrameAggregator(
                minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64, maxAccumulatedFrameSize: setup.limits.maxMessageBytes
            ),
            session,
        ])
        opened.increment()
    }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        writable = context.channel.isWritable
        let session = NIOLoopBound(self, eventLoop: context.eventLoop)
        let interval = setup.limits.pingInterval
        pings = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            session.value.pingTick()
        }
        if !context.channel.isActive { tearDown() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        tearDown()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        tearDown()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        if writable {
            for subscription in subscriptions.values { subscription.connection.sinkBecameWritable() }
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            close(.goingAway, reason: "server_shutting_down")
        } else if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength, NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge,
             NIOWebSocketFrameAggregator.Error.tooManyFragments:
            close(.messageTooLarge, reason: "message_too_large")
        case is NIOWebSocketError, is NIOWebSocketFrameAggregator.Error, is MaskedFramesOnly.Unmasked:
            close(.protocolError, reason: "protocol_error")
        default:
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        lastHeard = .now()
        guard !closing else { return }
        switch frame.opcode {
        case .text:
            receive(frame.unmaskedData)
        case .binary:
            close(.unacceptableData, reason: "binary_message")
        case .ping:
            write(WebSocketWire.pong(echoing: frame.unmaskedData))
            flush()
        case .connectionClose:
            var data = frame.unmaskedData
            close(data.readWebSocketErrorCode() ?? .normalClosure, reason: "", counted: "client_closed")
        default:
            break
        }
    }

    // MARK: Writing

    private var isWritable: Bool { writable && !closing && context != nil }

    private func write(_ bytes: ByteBuffer) {
        guard let context, bytes.readableBytes > 0 else { return }
        context.write(wrapOutboundOut(bytes), promise: nil)
        needsFlush = true
    }

    private func flush() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    private func reply(_ message: some Encodable) {
        guard !closing else { return }
        write(WebSocketWire.text(ServerMessage.json(message)))
        flush()
    }

    /// Sends a close frame (its reason is a code like the `error` messages') and closes the connection once it is
    /// out, or after a moment at most: a client that reads nothing never lets it out.
    private func close(_ code: WebSocketErrorCode, reason: String, counted label: String? = nil) {
        guard !closing, let context else { return }
        Self.closes[label ?? reason].increment()
        endSubscriptions()
        closing = true
        let channel = context.channel
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(WebSocketWire.close(code, reason: reason)), promise: written)
        let deadline = context.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        written.futureResult.whenComplete { _ in
            deadline.cancel()
            channel.close(promise: nil)
        }
    }

    private func pingTick() {
        guard !closing else { return }
        if NIODeadline.now() - lastHeard > setup.limits.pingInterval * 2 {
            close(.policyViolation, reason: "ping_timeout")
            return
        }
        write(WebSocketWire.ping())
        flush()
    }

    // MARK: Messages

    private func receive(_ data: ByteBuffer) {
        let message: ClientMessage
        do {
            message = try ClientMessage.parse(data, maxDepth: setup.limits.maxJSONDepth)
        } catch {
            reply(ServerMessage.Failure(error.error, thread: error.thread, clientID: error.clientID))
            return
        }
        switch message {
        case .ping:
            reply(ServerMessage.Pong())
        case .subscribe(let thread, let lastEventID):
            subscribe(thread, start: StreamOpener.start(lastEventID: lastEventID))
        case .unsubscribe(let thread):
            unsubscribe(thread)
        case .send(let thread, let clientID, let fields):
            send(fields, to: thread, clientID: clientID)
        }
    }

    private func subscribe(_ thread: UUID, start: StreamConnection.Start) {
        guard subscriptions[thread] == nil, opening[thread] == nil else {
            reply(ServerMessage.Failure(APIError(.conflict, "already_subscribed", "this socket already watches the thread"), thread: thread))
            return
        }
        guard subscriptions.count + opening.count < setup.limits.maxThreads else {
            let error = APIError(.tooManyRequests, "too_many_subscriptions", "at most \(setup.limits.maxThreads) threads per socket")
            reply(ServerMessage.Failure(error, thread: thread))
            return
        }
        guard let context else { return }
        opening[thread] = false
        let session = NIOLoopBound(self, eventLoop: context.eventLoop)
        let (setup, channel) = (self.setup, context.channel)
        Task {
            do {
                _ = try await setup.opener.open(
                    thread: thread, user: setup.user, start: start, heartbeat: .byTransport, quota: nil, channel: channel,
                    logger: setup.logger
                ) { connection in
                    try session.value.attach(connection, thread: thread, resync: start == .malformed)
                }
            } catch is CancellationError, ChannelError.ioOnClosedChannel {
                // Unsubscribed while opening, or the socket is gone: nobody to tell.
                channel.eventLoop.execute { session.value.subscribeFailed(thread, nil) }
            } catch {
                let refusal = ErrorMiddleware<HeraldRequestContext>.apiError(for: error, logger: setup.logger)
                channel.eventLoop.execute { session.value.subscribeFailed(thread, refusal) }
            }
        }
    }

    /// On the loop, as the stream begins: `subscribed` goes out before anything of the stream.
    private func attach(_ connection: StreamConnection, thread: UUID, resync: Bool) throws -> any StreamSink {
        guard !closing, opening[thread] == false, let context else { throw CancellationError() }
        opening[thread] = nil
        let subscription = Subscription(thread: thread, connection: connection, session: self)
        subscriptions[thread] = subscription
        reply(ServerMessage.Subscribed(threadID: thread.text, resync: resync ? true : nil))
        let session = NIOLoopBound(self, eventLoop: context.eventLoop)
        let (eventLoop, id) = (context.eventLoop, connection.id)
        connection.whenFinished { reason in
            eventLoop.execute { session.value.subscriptionEnded(thread, connectionID: id, reason) }
        }
        return subscription
    }

    private func subscribeFailed(_ thread: UUID, _ error: APIError?) {
        let unsubscribedMeanwhile = opening.removeValue(forKey: thread)
        guard unsubscribedMeanwhile == false, let error else { return }
        reply(ServerMessage.Failure(error, thread: thread))
    }

    private func unsubscribe(_ thread: UUID) {
        if let subscription = subscriptions.removeValue(forKey: thread) {
            subscription.connection.end(.clientGone)
        } else if opening[thread] == false {
            opening[thread] = true
        } else {
            reply(ServerMessage.Failure(APIError(.notFound, "not_subscribed", "this socket does not watch the thread"), thread: thread))
            return
        }
        reply(ServerMessage.Unsubscribed(threadID: thread.text, reason: "client"))
    }

    private func subscriptionEnded(_ thread: UUID, connectionID: UInt64, _ reason: StreamConnection.EndReason) {
        guard let subscription = subscriptions[thread], subscription.connection.id == connectionID else { return }
        subscriptions[thread] = nil
        switch reason {
        case .threadDeleted:
            reply(ServerMessage.Unsubscribed(threadID: thread.text, reason: "thread_deleted"))
        case .shutdown:
            close(.goingAway, reason: "server_shutting_down")
        case .clientGone, .slowConsumer:
            break
        }
    }

    private func send(_ fields: Fields, to thread: UUID, clientID: String?) {
        guard let context else { return }
        let session = NIOLoopBound(self, eventLoop: context.eventLoop)
        let (setup, eventLoop) = (self.setup, context.eventLoop)
        Task {
            do {
                let sent = try await setup.sender.send(thread: thread, user: setup.user, fields: fields)
                let ack = ServerMessage.Ack(clientID: clientID, message: sent.message, run: sent.run, cached: sent.cached ? true : nil)
                eventLoop.execute { session.value.reply(ack) }
            } catch {
                let refusal = ErrorMiddleware<HeraldRequestContext>.apiError(for: error, logger: setup.logger)
                eventLoop.execute { session.value.reply(ServerMessage.Failure(refusal, thread: thread, clientID: clientID)) }
            }
        }
    }

    // MARK: Ending

    private func endSubscriptions() {
        let all = subscriptions.values
        subscriptions = [:]
        for key in opening.keys { opening[key] = true }
        for subscription in all { subscription.connection.end(.clientGone) }
    }

    private func tearDown() {
        pings?.cancel()
        pings = nil
        endSubscriptions()
        closing = true
        if holdsSlot {
            holdsSlot = false
            setup.abandon()
        }
    }

    private static let opened = Counter(label: "herald_websocket_connections_total")
    private static let closes = MetricHandles { Counter(label: "herald_websocket_closes_total", dimensions: [("reason", $0)]) }
}

/// RFC 6455 §5.1: a server closes the connection when a client's frame is not masked. Checked before the frames of
/// a message are joined, which drops their masks.
private final class MaskedFramesOnly: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    struct Unmasked: Error {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard unwrapInboundIn(data).maskKey != nil else {
            context.fireErrorCaught(Unmasked())
            return
        }
        context.fireChannelRead(data)
    }
}
