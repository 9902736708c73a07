import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure of `RedisCluster`: a node that did not start, a cluster that did not form or agree in time, a
/// `redis-cli` that failed. The description carries what was seen last and, where it helps, the nodes' log tails.
public struct RedisClusterError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A real Redis Cluster for tests: `masters` masters with `replicasPerMaster` replicas each (3 + 3 by default), every
/// node a `redis-server` child process (`ChildProcess`: killed with the test process however it ends) on 127.0.0.1,
/// a free port whose cluster bus port (+10000) is free too, its own temporary directory (nodes.conf), no persistence.
/// `cluster-node-timeout 1000` and `cluster-replica-validity-factor 0`, so a replica takes over within a few seconds
/// of its master's death however long it was disconnected.
///
/// The nodes are driven with `redis-cli` from PATH (as `RedisServer` does), so the cluster's behaviour under test
/// does not depend on Herald's own Redis client. A node's log is its process's stdout (`logs()`).
///
/// Sendable, checked by the compiler (as `PostgresServer`): every stored property is a `let` of a Sendable type; the
/// one value set after init, the masters' ports, sits behind a lock (`Locked`), and the nodes' state lives in the
/// `ChildProcess`es (Sendable, with their own locking) and in the servers themselves.
public final class RedisCluster: Sendable {
    private struct Node: Sendable {
        let port: Int
        let directory: URL
        let process: ChildProcess
    }

    private let nodes: [Node]
    /// The masters' ports once the cluster has formed (set once, by `start`).
    private let masterPorts = Locked<[Int]>([])
    private let cli: URL
    /// With TLS, every node speaks only TLS (clients, replication and the cluster bus) with these files.
    public let tls: TestCertificates?
    /// What `redis-cli` needs to reach a node: TLS and the CA, when the cluster speaks TLS.
    private var cliTLS: [String] { Self.cliArguments(tls) }

    /// The ports of all nodes, in the order given to `redis-cli --cluster create`.
    public var ports: [Int] { nodes.map(\.port) }

    /// "127.0.0.1:PORT" of the masters as the cluster was formed (ordered by their slots). After a failover or a kill
    /// some may be dead or replicas: a client is expected to find the current masters from any live seed.
    public var seeds: [String] { masterPorts.withLock { $0 }.map { "127.0.0.1:\($0)" } }

    /// The seeds comma-joined: the value for REDIS_CLUSTER_NODES.
    public var nodesSetting: String { seeds.joined(separator: ",") }

    private init(nodes: [Node], cli: URL, tls: TestCertificates?) {
        self.nodes = nodes
        self.cli = cli
        self.tls = tls
    }

    private static func cliArguments(_ tls: TestCertificates?) -> [String] {
        tls.map { ["--tls", "--cacert", $0.authority] } ?? []
    }

    deinit {
        Self.discard(nodes)
    }

    /// Starts `masters * (1 + replicasPerMaster)` nodes, forms the cluster with `redis-cli --cluster create` and
    /// waits (at most 60 s) until every node reports cluster_state:ok, every node sees the same nodes, roles and slot
    /// map with no node failing, and every replica's link to its master is up.
    /// With `tls`, every node speaks only TLS on its port (`--port 0 --tls-port`, `tls-cluster`, `tls-replication`),
    /// with a certificate that must name 127.0.0.1 (the address the nodes announce).
    public static func start(masters: Int = 3, replicasPerMaster: Int = 1, tls: TestCertificates? = nil) async throws -> RedisCluster {
        guard masters >= 3 else { throw RedisClusterError("a Redis Cluster needs at least 3 masters, not \(masters)") }
        guard replicasPerMaster >= 0 else { throw RedisClusterError("replicasPerMaster must be >= 0") }
        let server = try executable("redis-server")
        let cli = try executable("redis-cli")
        let count = masters * (1 + replicasPerMaster)
        var lastError: (any Error)?
        // A port found free can be taken by someone else before redis-server binds it: retry with other ports.
        for _ in 0..<3 {
            var nodes: [Node] = []
            do {
                for port in try clusterPorts(count) {
                    nodes.append(try launch(server, port: port, tls: tls))
                }
                for node in nodes {
                    try await waitForPing(node, cli: cli, tls: tls)
                }
            } catch {
                lastError = error
                discard(nodes)
                continue
            }
            // From here on `cluster` owns the nodes: thrown away on a failure, its deinit kills them.
            let cluster = RedisCluster(nodes: nodes, cli: cli, tls: tls)
            let addresses = nodes.map { "127.0.0.1:\($0.port)" }
            let create = try await run(
                cli,
                cliArguments(tls) + ["--cluster", "create"] + addresses + ["--cluster-replicas", String(replicasPerMaster), "--cluster-yes"],
                timeout: .seconds(60)
            )
            guard create.status == 0 else {
                throw RedisClusterError(
                    "redis-cli --cluster create failed (status \(create.status)):\n\(create.output)\(create.errors)\n\(cluster.logs())"
                )
            }
            let masterPorts = try await cluster.waitUntilFormed(masters: masters, timeout: .seconds(60))
            cluster.masterPorts.withLock { $0 = masterPorts }
            return cluster
        }
        throw lastError ?? RedisClusterError("no cluster started")
    }

    // MARK: - Slots

    /// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (what is between the first `{` and
    /// the first `}` after it, if not empty), mod 16384.
    public func slot(of key: String) -> Int {
        Self.slot(of: key)
    }

    /// The hash slot of `key` (see the instance method); no cluster needed.
    public static func slot(of key: String) -> Int {
        var bytes = Array(key.utf8)
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")),
            close > open + 1
        {
            bytes = Array(bytes[(open + 1)..<close])
        }
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return Int(crc) % 16384
    }

    /// The master serving `slot` as a live node sees it.
    public func master(ofSlot slot: Int) async throws -> (port: Int, nodeID: String) {
        let view = try await anyView()
        guard let owner = view.entries.first(where: { $0.isMaster && $0.owns(slot) }) else {
            throw RedisClusterError("no master serves slot \(slot) as 127.0.0.1:\(view.port) sees it:\n\(view.text)")
        }
        return (owner.port, owner.id)
    }

    /// The ports of the replicas of the master on `port` as a live node sees them, those flagged failing left out.
    public func replicas(ofMasterPort port: Int) async throws -> [Int] {
        let view = try await anyView()
        guard let master = view.entries.first(where: { $0.port == port }) else {
            throw RedisClusterError("127.0.0.1:\(view.port) knows no node on port \(port):\n\(view.text)")
        }
        return view.entries.filter { $0.masterID == master.id && !$0.isFailing }.map(\.port).sorted()
    }

    // MARK: - Failures and resharding

    /// SIGKILLs the node on `port` (a master, typically) without waiting. Its replica takes over after the
    /// node timeout (see `waitForFailover`).
    public func killMaster(port: Int) {
        guard let node = nodes.first(where: { $0.port == port }) else {
            preconditionFailure("no node of this cluster on port \(port) (ports: \(ports))")
        }
        node.process.signal(SIGKILL)
    }

    /// Waits until every running node sees the same live master, other than the one on `oldPort`, serving `slot`,
    /// that master sees itself as one, and every running node reports cluster_state:ok. Returns the master's port.
    public func waitForFailover(ofSlot slot: Int, from oldPort: Int, timeout: Duration) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        var last = "no attempt"
        while true {
            let views = await self.views()
            if let reason = views.first(where: { $0.entries == nil }).map({ "127.0.0.1:\($0.port) did not answer: \($0.text)" }) {
                last = reason
            } else {
                let owners = views.map { view in
                    (view.port, view.entries!.first { $0.isMaster && !$0.isFailing && $0.owns(slot) })
                }
                let ownerPorts = Set(owners.map { $0.1?.port ?? -1 })
                if ownerPorts.count == 1, let port = ownerPorts.first, port != -1, port != oldPort,
                    let own = views.first(where: { $0.port == port }),
                    own.entries!.contains(where: { $0.isMyself && $0.isMaster && $0.owns(slot) })
                {
                    if let notOK = await firstNotOK(views.map(\.port)) {
                        last = "127.0.0.1:\(port) serves slot \(slot) everywhere, but \(notOK)"
                    } else {
                        return port
                    }
                } else {
                    last = "masters of slot \(slot) as each node sees them: "
                        + owners.map { "\($0.0) → \($0.1.map { String($0.port) } ?? "none")" }.joined(separator: ", ")
                }
            }
            if ContinuousClock.now >= deadline {
                throw RedisClusterError("no failover of slot \(slot) away from port \(oldPort) within \(timeout): \(last)\n\(logs())")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Moves `slot` to the master on `targetPort` as `redis-cli --cluster reshard` does: the target IMPORTING, the
    /// source MIGRATING, its keys MIGRATEd 100 at a time, then SETSLOT NODE on the target, the source and every other
    /// live master. Returns once every running node sees the target serving the slot (at most 30 s).
    /// Keys containing a newline are not supported (they are read from redis-cli's output line by line).
    public func migrateSlot(_ slot: Int, to targetPort: Int) async throws {
        let view = try await anyView()
        guard let source = view.entries.first(where: { $0.isMaster && $0.owns(slot) }) else {
            throw RedisClusterError("no master serves slot \(slot) as 127.0.0.1:\(view.port) sees it:\n\(view.text)")
        }
        guard let target = view.entries.first(where: { $0.port == targetPort }), target.isMaster, !target.isFailing else {
            throw RedisClusterError("no live master on port \(targetPort) as 127.0.0.1:\(view.port) sees it:\n\(view.text)")
        }
        guard source.id != target.id else { return }
        let slotArgument = String(slot)
        try await command(port: target.port, "CLUSTER", "SETSLOT", slotArgument, "IMPORTING", source.id)
        try await command(port: source.port, "CLUSTER", "SETSLOT", slotArgument, "MIGRATING", target.id)
        while true {
            let keys = try await command(port: source.port, "CLUSTER", "GETKEYSINSLOT", slotArgument, "100")
                .split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
            if keys.isEmpty { break }
            try await redisCLI(
                port: source.port,
                ["MIGRATE", "127.0.0.1", String(target.port), "", "0", "5000", "KEYS"] + keys
            )
        }
        try await command(port: target.port, "CLUSTER", "SETSLOT", slotArgument, "NODE", target.id)
        try await command(port: source.port, "CLUSTER", "SETSLOT", slotArgument, "NODE", target.id)
        let running = Set(nodes.filter { $0.process.isRunning }.map(\.port))
        for other in view.entries
        where other.isMaster && !other.isFailing && running.contains(other.port) && other.id != source.id && other.id != target.id {
            try await command(port: other.port, "CLUSTER", "SETSLOT", slotArgument, "NODE", target.id)
        }

        let deadline = ContinuousClock.now + .seconds(30)
        var last = ""
        while true {
            let views = await self.views()
            let disagreeing = views.filter { view in
                view.entries?.first(where: { $0.isMaster && $0.owns(slot) })?.id != target.id
            }
            if disagreeing.isEmpty { return }
            last = disagreeing.map { "127.0.0.1:\($0.port):\n\($0.text)" }.joined(separator: "\n")
            if ContinuousClock.now >= deadline {
                throw RedisClusterError("slot \(slot) moved to port \(targetPort) but not every node sees it after 30 s:\n\(last)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: - Commands, logs, end

    /// Runs `redis-cli -p PORT args...` against one node and returns its standard output without the trailing
    /// newline (raw format: an array's elements one per line). Throws when redis-cli fails or the reply is an error
    /// (`-e`). Pass "-c" as the first argument to follow MOVED/ASK redirections.
    @discardableResult
    public func command(port: Int, _ args: String...) async throws -> String {
        try await redisCLI(port: port, args)
    }

    /// The last lines of every node's log, for failure messages.
    public func logs() -> String {
        Self.logs(of: nodes)
    }

    /// SIGKILLs every node without waiting. Also done by deinit, which then removes the nodes' directories.
    public func terminate() {
        for node in nodes { node.process.terminate() }
    }

    // MARK: - Private

    /// One line of CLUSTER NODES: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv>
    /// <config-epoch> <link-state> <slot>...`; slots as "N" or "N-M", "[N->-id]"/"[N-<-id]" (migrating/importing,
    /// only on the node itself) skipped.
    private struct Entry: Equatable, Sendable {
        let id: String
        let port: Int
        let flags: Set<String>
        let masterID: String?
        let slots: [ClosedRange<Int>]

        var isMaster: Bool { flags.contains("master") }
        var isMyself: Bool { flags.contains("myself") }
        var isFailing: Bool { flags.contains("fail") || flags.contains("fail?") }
        var isSettled: Bool { !isFailing && !flags.contains("handshake") && !flags.contains("noaddr") }

        func owns(_ slot: Int) -> Bool { slots.contains { $0.contains(slot) } }

        /// What every node must agree on: who it is, its role, its master, its slots.
        var shape: String {
            "\(id) \(port) \(isMaster ? "master" : "replica") \(masterID ?? "-") "
                + slots.map { "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",")
        }

        init?(line: Substring) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 8 else { return nil }
            let address = fields[1].prefix { $0 != "@" && $0 != "," }
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
                return nil
            }
            self.id = String(fields[0])
            self.port = port
            self.flags = Set(fields[2].split(separator: ",").map(String.init))
            self.masterID = fields[3] == "-" ? nil : String(fields[3])
            self.slots = fields.dropFirst(8).compactMap { field -> ClosedRange<Int>? in
                if field.hasPrefix("[") { return nil }
                let bounds = field.split(separator: "-").compactMap { Int($0) }
                switch bounds.count {
                case 1: return bounds[0]...bounds[0]
                case 2 where bounds[0] <= bounds[1]: return bounds[0]...bounds[1]
                default: return nil
                }
            }
        }
    }

    /// One node's CLUSTER NODES: `entries` nil when it did not answer (`text` then says why).
    private struct View: Sendable {
        let port: Int
        let entries: [Entry]?
        let text: String
    }

    /// CLUSTER NODES of every running node.
    private func views() async -> [View] {
        var views: [View] = []
        for node in nodes where node.process.isRunning {
            views.append(await view(of: node.port))
        }
        return views
    }

    private func view(of port: Int) async -> View {
        do {
            let text = try await redisCLI(port: port, ["CLUSTER", "NODES"])
            let entries = text.split(whereSeparator: \.isNewline).compactMap { Entry(line: $0) }
            return View(port: port, entries: entries.isEmpty ? nil : entries, text: text)
        } catch {
            return View(port: port, entries: nil, text: "\(error)")
        }
    }

    /// The CLUSTER NODES of the first running node that answers.
    private func anyView() async throws -> (port: Int, entries: [Entry], text: String) {
        var failures: [String] = []
        for node in nodes where node.process.isRunning {
            let view = await view(of: node.port)
            if let entries = view.entries { return (view.port, entries, view.text) }
            failures.append("127.0.0.1:\(node.port): \(view.text)")
        }
        throw RedisClusterError("no node answers CLUSTER NODES:\n\(failures.joined(separator: "\n"))\n\(logs())")
    }

    /// A description of the first of `ports` not reporting cluster_state:ok, or nil.
    private func firstNotOK(_ ports: [Int]) async -> String? {
        for port in ports {
            let info = (try? await redisCLI(port: port, ["CLUSTER", "INFO"])) ?? ""
            if !info.split(whereSeparator: \.isNewline).contains("cluster_state:ok") {
                return "127.0.0.1:\(port) does not report cluster_state:ok (\(info.split(whereSeparator: \.isNewline).first ?? "no answer"))"
            }
        }
        return nil
    }

    /// Polls until the freshly created cluster has settled (see `start`); returns the masters' ports by slot order.
    private func waitUntilFormed(masters: Int, timeout: Duration) async throws -> [Int] {
        let deadline = ContinuousClock.now + timeout
        var last = "no attempt"
        while true {
            if let masterPorts = try await formed(masters: masters, last: &last) {
                return masterPorts
            }
            if ContinuousClock.now >= deadline {
                throw RedisClusterError("the cluster did not settle within \(timeout): \(last)\n\(logs())")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    private func formed(masters: Int, last: inout String) async throws -> [Int]? {
        for node in nodes where !node.process.isRunning {
            throw RedisClusterError("redis-server on port \(node.port) exited (status \(node.process.exitStatus ?? -1))\n\(logs())")
        }
        let views = await self.views()
        var shapes: Set<[String]> = []
        for view in views {
            guard let entries = view.entries else {
                last = "127.0.0.1:\(view.port) did not answer CLUSTER NODES: \(view.text)"
                return nil
            }
            guard entries.count == nodes.count, entries.allSatisfy(\.isSettled) else {
                last = "127.0.0.1:\(view.port) sees \(entries.count) of \(nodes.count) nodes, or some failing or in handshake:\n\(view.text)"
                return nil
            }
            shapes.insert(entries.map(\.shape).sorted())
        }
        guard shapes.count == 1, let entries = views.first?.entries else {
            last = "the nodes disagree about the cluster:\n" + views.map { "127.0.0.1:\($0.port):\n\($0.text)" }.joined(separator: "\n")
            return nil
        }
        let owners = entries.filter { $0.isMaster && !$0.slots.isEmpty }
        let covered = owners.reduce(0) { $0 + $1.slots.reduce(0) { $0 + $1.count } }
        guard owners.count == masters, covered == 16384 else {
            last = "\(owners.count) masters with slots, \(covered) slots covered:\n\(views[0].text)"
            return nil
        }
        if let notOK = await firstNotOK(nodes.map(\.port)) {
            last = notOK
            return nil
        }
        for replica in entries where !replica.isMaster {
            let info = (try? await redisCLI(port: replica.port, ["INFO", "replication"])) ?? ""
            guard info.split(whereSeparator: \.isNewline).contains("master_link_status:up") else {
                last = "the replica on port \(replica.port) has no link up to its master yet"
                return nil
            }
        }
        return owners.sorted { $0.slots.map(\.lowerBound).min()! < $1.slots.map(\.lowerBound).min()! }.map(\.port)
    }

    @discardableResult
    private func redisCLI(port: Int, _ args: [String], timeout: Duration = .seconds(10)) async throws -> String {
        let result = try await Self.run(cli, cliTLS + ["-h", "127.0.0.1", "-p", String(port), "-e"] + args, timeout: timeout)
        guard result.status == 0 else {
            throw RedisClusterError(
                "redis-cli -p \(port) \(args.joined(separator: " ")) failed (status \(result.status)): \(result.errors)\(result.output)"
            )
        }
        var text = result.output
        while text.hasSuffix("\n") || text.hasSuffix("\r\n") || text.hasSuffix("\r") {
            text.removeLast()
        }
        return text
    }

    private static func discard(_ nodes: [Node]) {
        for node in nodes {
            node.process.terminate()
            try? FileManager.default.removeItem(at: node.directory)
            try? FileManager.default.removeItem(atPath: node.process.logPath)
        }
    }

    private static func logs(of nodes: [Node]) -> String {
        nodes.map { node in
            let state = node.process.isRunning ? "running" : "exited with \(node.process.exitStatus ?? -1)"
            return "--- redis-server 127.0.0.1:\(node.port) (pid \(node.process.pid), \(state)):\n\(node.process.logTail(maxLines: 20))"
        }.joined(separator: "\n")
    }

    /// `count` distinct ports p <= 55000 with p and p + 10000 (its cluster bus) free right now.
    private static func clusterPorts(_ count: Int) throws -> [Int] {
        var ports: [Int] = []
        var attempts = 0
        while ports.count < count {
            attempts += 1
            guard attempts <= 10_000 else { throw RedisClusterError("found only \(ports.count) of \(count) free port pairs") }
            let port = freeTCPPort()
            let taken = ports.flatMap { [$0, $0 + 10000] }
            // The bus port is claimed too, so no other test of this process is given it meanwhile.
            guard port <= 55000, !taken.contains(port), !taken.contains(port + 10000), isFree(port + 10000), claimTCPPort(port + 10000)
            else { continue }
            ports.append(port)
        }
        return ports
    }

    /// Whether `port` on 127.0.0.1 can be bound right now (no SO_REUSEADDR: a port in TIME_WAIT counts as taken).
    private static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    private static func launch(_ server: URL, port: Int, tls: TestCertificates?) throws -> Node {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("herald-redis-cluster-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        do {
            // No --logfile: the log goes to stdout, which ChildProcess writes to its log file.
            let process = try ChildProcess.start(
                server.path,
                (tls.map { tls in
                    [
                        "--port", "0", "--tls-port", String(port), "--tls-cluster", "yes", "--tls-replication", "yes",
                        "--tls-cert-file", tls.serverCertificate, "--tls-key-file", tls.serverKey,
                        "--tls-ca-cert-file", tls.authority, "--tls-auth-clients", "no",
                    ]
                } ?? ["--port", String(port)]) + [
                    "--bind", "127.0.0.1",
                    "--dir", directory.path,
                    "--daemonize", "no",
                    "--save", "",
                    "--appendonly", "no",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "1000",
                    "--cluster-replica-validity-factor", "0",
                    // A replica's first sync at once, not after the default 5 s wait for more replicas.
                    "--repl-diskless-sync-delay", "0",
                ],
                directory: directory.path
            )
            return Node(port: port, directory: directory, process: process)
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    /// Waits (at most 10 s) until the node answers PING; throws early if it exits (its port was taken, say).
    private static func waitForPing(_ node: Node, cli: URL, tls: TestCertificates?) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline, node.process.isRunning {
            if let reply = try? await run(cli, cliArguments(tls) + ["-h", "127.0.0.1", "-p", String(node.port), "PING"], timeout: .seconds(5)),
                reply.output.hasPrefix("PONG")
            {
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw RedisClusterError("redis-server on port \(node.port) did not answer PING:\n\(logs(of: [node]))")
    }

    private struct Output: Sendable {
        let status: Int32
        let output: String
        let errors: String
    }

    /// Runs `executable` with `arguments` on a GCD thread (not a Swift concurrency one: it blocks until the process
    /// exits) and collects its stdout and stderr; SIGKILLs it after `timeout`.
    private static func run(_ executable: URL, _ arguments: [String], timeout: Duration) async throws -> Output {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Output, any Error>) in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try runBlocking(executable, arguments, timeout: timeout) })
            }
        }
    }

    private static func runBlocking(_ executable: URL, _ arguments: [String], timeout: Duration) throws -> Output {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        // The pipes are made inside the spawn lock too, so no other child can inherit their write ends.
        let (output, errors) = try ChildRegistry.spawnLocked { () throws -> (Pipe, Pipe) in
            let output = Pipe()
            let errors = Pipe()
            process.standardOutput = output
            process.standardError = errors
            try process.run()
            return (output, errors)
        }
        let pid = process.processIdentifier
        let done = Locked(false)
        let (seconds, attoseconds) = timeout.components
        DispatchQueue.global().asyncAfter(deadline: .now() + Double(seconds) + Double(attoseconds) / 1e18) {
            // Not once its output is complete: the process has exited (or is exiting) and its pid may be reused.
            done.withLock { finished in
                if !finished { kill(pid, SIGKILL) }
            }
        }
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        done.withLock { $0 = true }
        process.waitUntilExit()
        let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        return Output(status: status, output: String(decoding: out, as: UTF8.self), errors: String(decoding: err, as: UTF8.self))
    }

    private static func executable(_ name: String) throws -> URL {
        guard let url = executableInPath(name) else {
            throw RedisClusterError("\(name) not found in PATH (Debian: apt-get install redis-server; scripts/install-deps.sh)")
        }
        return url
    }

    /// A value under a lock. `@unchecked Sendable`: `value` is only touched with `lock` held.
    private final class Locked<Value: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var value: Value

        init(_ value: Value) { self.value = value }

        func withLock<Result>(_ body: (inout Value) -> Result) -> Result {
            lock.withLock { body(&value) }
        }
    }
}
