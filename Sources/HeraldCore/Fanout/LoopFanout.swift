import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// The hub's presence on one event loop: the streams whose channels that loop owns, and an inbox the Redis
/// subscriber posts to. A frame costs one post per loop that has watchers of its thread; a batch of posts is
/// delivered in one `execute`, each stream's writes of the batch flushed once, so a burst of frames leaves in
/// one `writev` per client (and a lone frame in one `writeAndFlush`).
final class LoopFanout: Sendable {
    enum Item: Sendable {
        /// `missesFrames`: the channel's subscription is down as the stream registers (see `subscriberLost`).
        case register(StreamConnection, channel: String, missesFrames: Bool)
        /// A frame of `channel`, its id parsed once for every stream; `endsStreams` for `thread_deleted`.
        case frame(ByteBuffer, id: StreamID?, channel: String, endsStreams: Bool)
        /// Frames of these channels (nil: of every channel) may be missed until `subscriberReady` names them.
        case subscriberLost(Set<String>?)
        case subscriberReady(Set<String>?)
    }

    private struct Inbox {
        var items: [Item] = []
        var scheduled = false
    }

    /// Touched only on `loop`.
    private final class Streams {
        var byChannel: [String: Watchers] = [:]
        var all: [UInt64: StreamConnection] = [:]
        var heartbeats: RepeatedTask?

        /// The streams of `channels`, or every stream.
        func connections(of channels: Set<String>?) -> [StreamConnection] {
            guard let channels else { return Array(all.values) }
            return channels.flatMap { byChannel[$0]?.members.values.map { $0 } ?? [] }
        }
    }

    /// A channel's streams on this loop; the array every frame iterates is rebuilt only after a change.
    private struct Watchers {
        var members: [UInt64: StreamConnection] = [:]
        private var list: ContiguousArray<StreamConnection>?

        mutating func insert(_ connection: StreamConnection) {
            members[connection.id] = connection
            list = nil
        }

        mutating func remove(_ id: UInt64) {
            members[id] = nil
            list = nil
        }

        mutating func all() -> ContiguousArray<StreamConnection> {
            if let list { return list }
            let built = ContiguousArray(members.values)
            list = built
            return built
        }
    }

    let loop: any EventLoop
    private let heartbeatInterval: TimeAmount
    private let inbox = NIOLockedValueBox(Inbox())
    /// Frames waiting in the queues of this loop's streams (clients behind), counted at each heartbeat tick.
    let queuedFrames = NIOLockedValueBox(0)
    private let streams: NIOLoopBoundBox<Streams>

    init(loop: any EventLoop, heartbeatInterval: TimeAmount) {
        self.loop = loop
        self.heartbeatInterval = heartbeatInterval
        self.streams = .makeBoxSendingValue(Streams(), eventLoop: loop)
    }

    /// Queues `item` for the loop, in order with everything posted before it; the first post of a batch schedules
    /// its delivery.
    func post(_ item: Item) {
        let schedule = inbox.withLockedValue { inbox -> Bool in
            inbox.items.append(item)
            defer { inbox.scheduled = true }
            return !inbox.scheduled
        }
        if schedule {
            loop.execute { self.deliverInbox() }
        }
    }

    /// On the loop: a stream that ended is forgotten.
    func remove(_ connection: StreamConnection, channel: String) {
        let streams = self.streams.value
        guard streams.all.removeValue(forKey: connection.id) != nil else { return }
        streams.byChannel[channel]?.remove(connection.id)
        if streams.byChannel[channel]?.members.isEmpty == true { streams.byChannel[channel] = nil }
        if streams.all.isEmpty {
            streams.heartbeats?.cancel()
            streams.heartbeats = nil
        }
    }

    private func deliverInbox() {
        let items = inbox.withLockedValue { inbox -> [Item] in
            inbox.scheduled = false
            defer { inbox.items.removeAll(keepingCapacity: true) }
            return inbox.items
        }
        let streams = self.streams.value
        var delivered: [StreamID] = []
        // Each stream is flushed with its thread's last frame of the batch, while it is at hand, rather than in a
        // second pass over every stream written to (with thousands of streams, each one's objects are out of the
        // cache again by then).
        var lastFrameOf: [String: Int] = [:]
        if items.count > 1 {
            for (index, item) in items.enumerated() {
                if case .frame(_, _, let channel, _) = item { lastFrameOf[channel] = index }
            }
        }
        for (index, item) in items.enumerated() {
            switch item {
            case .register(let connection, let channel, let missesFrames):
                // One that ended before getting here has nothing to receive.
                guard connection.endReason == nil else { continue }
                streams.byChannel[channel, default: Watchers()].insert(connection)
                streams.all[connection.id] = connection
                if missesFrames { connection.subscriberLost() }
                if streams.heartbeats == nil { startHeartbeats(streams) }
            case .frame(let bytes, let id, let channel, let endsStreams):
                guard let watchers = streams.byChannel[channel]?.all() else { continue }
                let frame = OutgoingFrame(bytes, id: id)
                if let id { delivered.append(id) }
                let flushing = items.count == 1 || lastFrameOf[channel] == index
                for connection in watchers {
                    connection.receive(frame, flushing: flushing)
                    if endsStreams { connection.end(.threadDeleted) }
                }
            case .subscriberLost(let channels):
                for connection in streams.connections(of: channels) { connection.subscriberLost() }
            case .subscriberReady(let channels):
                for connection in streams.connections(of: channels) { connection.subscriberReady() }
            }
        }
        recordDelivery(of: delivered)
    }

    /// Publish → socket, per frame per loop: a frame's id is Redis's clock when it was logged, so the time since
    /// is how long it took to reach the clients' sockets (across nodes, give or take the clocks' skew).
    private func recordDelivery(of ids: [StreamID]) {
        guard !ids.isEmpty else { return }
        let now = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
        for id in ids {
            let milliseconds = now > id.milliseconds ? now - id.milliseconds : 0
            Self.deliveryTimer.recordNanoseconds(Int64(milliseconds) * 1_000_000)
        }
    }

    private static let deliveryTimer = Timer(label: "herald_frame_delivery_seconds")

    /// One timer per loop rather than one per stream: an idle stream costs no timer of its own.
    private func startHeartbeats(_ streams: Streams) {
        streams.heartbeats = loop.scheduleRepeatedTask(initialDelay: heartbeatInterval, delay: heartbeatInterval) { _ in
            let streams = self.streams.value
            var written: [StreamConnection] = []
            var queued = 0
            for connection in streams.all.values {
                if connection.heartbeat() { written.append(connection) }
                queued += connection.queuedFrames
            }
            for connection in written { connection.flushIfNeeded() }
            self.queuedFrames.withLockedValue { $0 = queued }
        }
    }
}
