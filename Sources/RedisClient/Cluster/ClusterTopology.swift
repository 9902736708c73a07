import Logging
import NIOCore
import NIOPosix

/// Which master serves each of a cluster's 16 384 slots, as last learnt from `CLUSTER SHARDS`.
///
/// Shared by a node's command client and its subscriber. `refresh()` asks the known masters, then the seeds,
/// over a short-lived connection (refreshes are rare: start-up, a `MOVED`, a failover); concurrent refreshes share
/// one round trip.
public final class ClusterTopology: Sendable {
    /// One layout: `owners[slot]` indexes `masters`, or is -1 for a slot no healthy master serves.
    public struct Layout: Sendable, Equatable {
        public var masters: [RedisEndpoint]
        var owners: [Int16]

        public static let empty = Layout(masters: [], owners: Array(repeating: -1, count: HashSlot.count))

        public func master(ofSlot slot: Int) -> RedisEndpoint? {
            let owner = owners[slot]
            return owner < 0 ? nil : masters[Int(owner)]
        }
    }

    private struct State: Sendable {
        var layout = Layout.empty
        var refreshing: Task<Layout, any Error>?
        /// Bumped by every change of the layout.
        var generation = 0
    }

    private let configuration: RedisClusterConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Locked(State())

    public init(configuration: RedisClusterConfiguration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    public var layout: Layout { state.withLock { $0.layout } }
    public var generation: Int { state.withLock { $0.generation } }

    public func master(ofSlot slot: Int) -> RedisEndpoint? {
        state.withLock { $0.layout.master(ofSlot: slot) }
    }

    /// A `MOVED` reply: the slot is served by `endpoint` now (the next refresh tells the rest).
    func moved(slot: Int, to endpoint: RedisEndpoint) {
        state.withLock { state in
            guard state.layout.master(ofSlot: slot) != endpoint else { return }
            if let index = state.layout.masters.firstIndex(of: endpoint) {
                state.layout.owners[slot] = Int16(index)
            } else {
                state.layout.masters.append(endpoint)
                state.layout.owners[slot] = Int16(state.layout.masters.count - 1)
            }
            state.generation += 1
        }
    }

    /// Learns the layout again; throws if no node answers.
    @discardableResult
    public func refresh() async throws -> Layout {
        let task: Task<Layout, any Error> = state.withLock { state in
            if let refreshing = state.refreshing { return refreshing }
            let candidates = state.layout.masters + configuration.seeds.filter { !state.layout.masters.contains($0) }
            let task = Task { try await self.fetch(from: candidates) }
            state.refreshing = task
            return task
        }
        let result = await task.result
        state.withLock { state in
            guard state.refreshing == task else { return }
            state.refreshing = nil
            if case .success(let layout) = result, layout != state.layout {
                state.layout = layout
                state.generation += 1
            }
        }
        return try result.get()
    }

    private func fetch(from candidates: [RedisEndpoint]) async throws -> Layout {
        var lastError: any Error = RedisError.notConnected
        for endpoint in candidates {
            do {
                let connection = try await RedisConnection.connect(
                    configuration: configuration.configuration(for: endpoint), eventLoopGroup: eventLoopGroup, logger: logger,
                    connectTimeout: .seconds(2)
                )
                let reply: Result<RESPValue, any Error>
                do { reply = .success(try await connection.send(["CLUSTER", "SHARDS"])) } catch { reply = .failure(error) }
                await connection.close()
                let layout = try Self.layout(fromShards: reply.get(), tls: configuration.node.tls != nil)
                guard !layout.masters.isEmpty else { throw RedisError.protocolError("CLUSTER SHARDS names no healthy master") }
                return layout
            } catch {
                logger.debug("Redis cluster: layout not learnt from a node", metadata: ["node": "\(endpoint)", "error": "\(error)"])
                lastError = error
            }
        }
        throw lastError
    }

    /// Reads a `CLUSTER SHARDS` reply (RESP2: each shard and node is a flat list of names and values): each
    /// shard's slot ranges go to its online master. With TLS, a node's `tls-port` is used.
    static func layout(fromShards reply: RESPValue, tls: Bool) throws -> Layout {
        guard let shards = reply.array else { throw RedisError.protocolError("CLUSTER SHARDS: not an array") }
        var layout = Layout.empty
        for shard in shards {
            let fields = try Self.fields(shard)
            guard let ranges = fields["slots"]?.array?.compactMap(\.int), ranges.count % 2 == 0,
                let nodes = fields["nodes"]?.array
            else { throw RedisError.protocolError("CLUSTER SHARDS: a shard without slots or nodes") }
            let master = try nodes.map(Self.fields).first { node in
                node["role"]?.string == "master" && node["health"]?.string == "online"
            }
            guard let master, let endpoint = Self.endpoint(of: master, tls: tls), !ranges.isEmpty else { continue }
            let index = Int16(layout.masters.count)
            layout.masters.append(endpoint)
            for pair in stride(from: 0, to: ranges.count, by: 2) {
                let (start, end) = (ranges[pair], ranges[pair + 1])
                guard 0 <= start, start <= end, end < HashSlot.count else { throw RedisError.protocolError("CLUSTER SHARDS: bad slot range") }
                for slot in start...end { layout.owners[slot] = index }
            }
        }
        return layout
    }

    private static func fields(_ value: RESPValue) throws -> [String: RESPValue] {
        guard let items = value.array, items.count % 2 == 0 else { throw RedisError.protocolError("CLUSTER SHARDS: not a field list") }
        var fields: [String: RESPValue] = [:]
        for index in stride(from: 0, to: items.count, by: 2) {
            if let name = items[index].string { fields[name] = items[index + 1] }
        }
        return fields
    }

    private static func endpoint(of node: [String: RESPValue], tls: Bool) -> RedisEndpoint? {
        let host = [node["endpoint"], node["ip"]].compactMap { $0?.string }.first { !$0.isEmpty && $0 != "?" }
        let port = (tls ? node["tls-port"]?.int : nil) ?? node["port"]?.int
        guard let host, let port else { return nil }
        return RedisEndpoint(host: host, port: port)
    }
}
