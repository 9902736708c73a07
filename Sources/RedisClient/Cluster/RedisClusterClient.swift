import Logging
import NIOCore
import NIOPosix

/// Commands and scripts on a Redis Cluster: each goes to the master serving its key's slot, over one pipelined
/// connection per master (a `RedisClient` each).
///
/// Redirects are followed, at most `maxRedirects` times per command: `MOVED` (the slot lives elsewhere now: the
/// layout is patched and refreshed), `ASK` (the slot is migrating and the key already moved: `ASKING` and the
/// command on the target), `TRYAGAIN` and `CLUSTERDOWN` (a migration or failover in progress: a short pause). A
/// command is re-sent only when it cannot have run: after a redirect, or when its master could not be reached at
/// all (the layout is then refreshed first). One lost in flight throws, as on a single server: the caller decides.
public final class RedisClusterClient: RedisCommands {
    private let configuration: RedisClusterConfiguration
    public let topology: ClusterTopology
    private let name: String?
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let observer: @Sendable (RedisEndpoint) -> RedisClientObserver
    private let clients = Locked<[RedisEndpoint: (client: RedisClient, observer: RedisClientObserver)]>([:])
    private let closed = Locked(false)
    static let maxRedirects = 5

    /// `observer` is asked once per master, so reports can name the shard.
    public init(
        configuration: RedisClusterConfiguration,
        topology: ClusterTopology,
        name: String? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        observer: @escaping @Sendable (RedisEndpoint) -> RedisClientObserver = { _ in .none }
    ) {
        self.configuration = configuration
        self.topology = topology
        self.name = name
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.observer = observer
    }

    public func send(_ arguments: [RedisArgument], key: String?) async throws -> RESPValue {
        try await routed(slot: key.map(HashSlot.of)) { client, asking in
            try await client.send(arguments, asking: asking)
        }
    }

    public func eval(_ script: RedisScript, keys: [String], arguments: [RedisArgument]) async throws -> RESPValue {
        try await routed(slot: keys.first.map(HashSlot.of)) { client, asking in
            try await client.eval(script, keys: keys, arguments: arguments, asking: asking)
        }
    }

    /// On the master the layout names for the keys' slot, if its connection is up; a redirect fails the future.
    public func evalNow(_ script: RedisScript, keys: [String], arguments: [RedisArgument]) -> EventLoopFuture<RESPValue>? {
        guard let key = keys.first, let master = topology.layout.master(ofSlot: HashSlot.of(key)),
              let node = try? node(master) else { return nil }
        return node.client.evalNow(script, keys: keys, arguments: arguments)
    }

    public func ping() async -> RedisHealth {
        var layout = topology.layout
        if layout.masters.isEmpty || layout.owners.contains(-1) {
            layout = (try? await topology.refresh()) ?? layout
        }
        let servers = await withTaskGroup(of: (String, Bool).self) { group in
            for master in layout.masters {
                group.addTask { (master.description, (try? await self.node(master).client.send(["PING"])) != nil) }
            }
            return await group.reduce(into: [String: Bool]()) { $0[$1.0] = $1.1 }
        }
        return RedisHealth(servers: servers, allSlotsServed: !layout.owners.contains(-1))
    }

    public func close() async {
        let all = closed.withLock { closed in
            closed = true
            return clients.withLock { clients in
                defer { clients = [:] }
                return clients.values.map(\.client)
            }
        }
        for client in all { await client.close() }
    }

    /// The client of `endpoint`'s master, created on first use, and what observes it.
    private func node(_ endpoint: RedisEndpoint) throws -> (client: RedisClient, observer: RedisClientObserver) {
        guard !closed.withLock({ $0 }) else { throw RedisError.notConnected }
        return clients.withLock { clients in
            if let node = clients[endpoint] { return node }
            let observer = observer(endpoint)
            let client = RedisClient(
                configuration: configuration.configuration(for: endpoint), name: name, eventLoopGroup: eventLoopGroup, logger: logger,
                observer: observer
            )
            clients[endpoint] = (client, observer)
            return (client, observer)
        }
    }

    private enum Redirect {
        case moved(slot: Int, RedisEndpoint)
        case ask(RedisEndpoint)
        case pause

        init?(_ message: String) {
            let words = message.split(separator: " ")
            switch words.first {
            case "MOVED", "ASK":
                guard words.count == 3, let slot = Int(words[1]), let colon = words[2].lastIndex(of: ":"),
                    let port = Int(words[2][words[2].index(after: colon)...])
                else { return nil }
                var host = words[2][..<colon]
                if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
                let endpoint = RedisEndpoint(host: String(host), port: port)
                self = words[0] == "MOVED" ? .moved(slot: slot, endpoint) : .ask(endpoint)
            case "TRYAGAIN", "CLUSTERDOWN": self = .pause
            default: return nil
            }
        }
    }

    private func routed(slot: Int?, _ command: (RedisClient, _ asking: Bool) async throws -> RESPValue) async throws -> RESPValue {
        var asking: RedisEndpoint?
        var attempt = 0
        while true {
            attempt += 1
            let retriesLeft = attempt <= Self.maxRedirects
            var observer: RedisClientObserver?
            do {
                let target: RedisEndpoint
                if let asking { target = asking } else { target = try await master(ofSlot: slot) }
                let node = try node(target)
                observer = node.observer
                return try await command(node.client, asking != nil)
            } catch RedisError.server(let message) where retriesLeft {
                guard let redirect = Redirect(message) else { throw RedisError.server(message) }
                asking = nil
                switch redirect {
                case .moved(let slot, let target):
                    observer?.redirected(.moved)
                    topology.moved(slot: slot, to: target)
                    Task { try? await self.topology.refresh() }
                case .ask(let target):
                    observer?.redirected(.ask)
                    asking = target
                case .pause:
                    try await pauseAndRelearn(attempt)
                }
            } catch let error where retriesLeft && Self.wasNotSent(error) {
                // The master could not be reached: it may be gone (a failover). Learn the layout again and retry.
                asking = nil
                try await pauseAndRelearn(attempt)
            }
        }
    }

    /// Errors that leave a command unsent: connecting failed or timed out (SwiftNIO's connect errors included).
    private static func wasNotSent(_ error: any Error) -> Bool {
        switch error {
        case RedisError.notConnected, RedisError.timeout: true
        case is RedisError, is CancellationError: false
        default: true
        }
    }

    private func pauseAndRelearn(_ attempt: Int) async throws {
        try await Task.sleep(for: .milliseconds(25 << min(attempt, 4)))
        _ = try? await topology.refresh()
    }

    /// The master serving `slot` (any master for keyless commands), learning the layout first if needed.
    private func master(ofSlot slot: Int?) async throws -> RedisEndpoint {
        var layout = topology.layout
        if layout.masters.isEmpty { layout = try await topology.refresh() }
        if let slot {
            guard let master = layout.master(ofSlot: slot) else { throw RedisError.server("CLUSTERDOWN slot \(slot) is not served") }
            return master
        }
        guard let any = layout.masters.first else { throw RedisError.notConnected }
        return any
    }
}
