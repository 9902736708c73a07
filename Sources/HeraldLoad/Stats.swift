import Foundation
import Glibc

/// Nearest-rank percentiles of a sorted sample.
struct Percentiles {
    let sorted: [Int64]

    init(_ values: [Int64]) {
        sorted = values.sorted()
    }

    var count: Int { sorted.count }

    /// `p` in 0...1; nil for an empty sample.
    func value(_ p: Double) -> Int64? {
        guard !sorted.isEmpty else { return nil }
        let rank = Int((p * Double(sorted.count)).rounded(.up))
        return sorted[Swift.min(Swift.max(rank, 1), sorted.count) - 1]
    }

    var max: Int64? { sorted.last }

    /// Milliseconds with two decimals, or "-".
    func ms(_ p: Double) -> String { Self.ms(value(p)) }

    static func ms(_ nanos: Int64?) -> String {
        guard let nanos else { return "-" }
        return String(format: "%.2f", Double(nanos) / 1e6)
    }
}

/// What /proc says about a process (Linux).
enum ProcessProbe {
    /// Resident set size in KiB (`VmRSS` of /proc/PID/status).
    static func rssKiB(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.dropFirst("VmRSS:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "")
        }
        return nil
    }

    /// User + system CPU seconds (`utime`, `stime` of /proc/PID/stat).
    static func cpuSeconds(_ pid: Int32, includingExitedChildren: Bool = false) -> Double? {
        cpuTimes(pid, includingExitedChildren: includingExitedChildren).map { $0.user + $0.system }
    }

    static func cpuTimes(_ pid: Int32, includingExitedChildren: Bool = false) -> (user: Double, system: Double)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm) ": field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 14, var user = Double(fields[11]), var system = Double(fields[12]) else { return nil }
        if includingExitedChildren, let childUser = Double(fields[13]), let childSystem = Double(fields[14]) {
            user += childUser
            system += childSystem
        }
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (user / ticksPerSecond, system / ticksPerSecond)
    }

    /// CPU seconds of a process and its live children (PostgreSQL: the postmaster and its backends), plus what
    /// its children that already exited used (`cutime`, `cstime`).
    static func treeCPUSeconds(_ pid: Int32) -> Double? {
        guard let own = cpuSeconds(pid, includingExitedChildren: true) else { return nil }
        return children(of: pid).reduce(own) { $0 + (cpuSeconds($1) ?? 0) }
    }

    /// Resident set size of a process and its live children, in KiB (nginx: the master and its workers).
    static func treeRSSKiB(_ pid: Int32) -> Int? {
        guard let own = rssKiB(pid) else { return nil }
        return children(of: pid).reduce(own) { $0 + (rssKiB($1) ?? 0) }
    }

    private static func children(of pid: Int32) -> [Int32] {
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").compactMap { Int32($0) }
    }

    /// The 1-minute load average.
    static func loadAverage() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return nil }
        return text.split(separator: " ").first.flatMap { Double($0) }
    }

    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// Processes whose CPU time is sampled around a measurement.
struct Probes: Sendable {
    var herald: Int32?
    /// `herald` is the root of the server's process tree (another hub: nginx's master and workers).
    var heraldIsTree = false
    var redis: Int32?
    var postgres: Int32?

    /// The server's RSS in KiB: of its process, or of its whole tree.
    func serverRSSKiB() -> Int? {
        herald.flatMap(heraldIsTree ? ProcessProbe.treeRSSKiB : ProcessProbe.rssKiB)
    }
}

/// CPU seconds of Herald, Redis, PostgreSQL (postmaster and backends) and this process over an interval.
struct CPUSample {
    var herald: Double?
    /// Of `herald`, the time spent in the kernel (socket writes and reads, futexes, epoll).
    var heraldSystem: Double?
    var redis: Double?
    var postgres: Double?
    var own: Double

    static func take(_ probes: Probes) -> CPUSample {
        if probes.heraldIsTree {
            return CPUSample(
                herald: probes.herald.flatMap(ProcessProbe.treeCPUSeconds), heraldSystem: nil,
                redis: probes.redis.flatMap { ProcessProbe.cpuSeconds($0) }, postgres: probes.postgres.flatMap(ProcessProbe.treeCPUSeconds),
                own: ProcessProbe.ownCPUSeconds()
            )
        }
        let herald = probes.herald.flatMap { ProcessProbe.cpuTimes($0) }
        return CPUSample(
            herald: herald.map { $0.user + $0.system },
            heraldSystem: herald?.system,
            redis: probes.redis.flatMap { ProcessProbe.cpuSeconds($0) },
            postgres: probes.postgres.flatMap(ProcessProbe.treeCPUSeconds),
            own: ProcessProbe.ownCPUSeconds()
        )
    }

    static func - (after: CPUSample, before: CPUSample) -> CPUSample {
        func minus(_ a: Double?, _ b: Double?) -> Double? {
            guard let a, let b else { return nil }
            return a - b
        }
        return CPUSample(
            herald: minus(after.herald, before.herald), heraldSystem: minus(after.heraldSystem, before.heraldSystem),
            redis: minus(after.redis, before.redis),
            postgres: minus(after.postgres, before.postgres), own: after.own - before.own
        )
    }

    /// "load tool CPU 1.00 s, redis CPU 0.20 s, postgres CPU 0.50 s"
    var othersDescription: String {
        var parts = [String(format: "load tool CPU %.2f s", own)]
        if let redis { parts.append(String(format: "redis CPU %.2f s", redis)) }
        if let postgres { parts.append(String(format: "postgres CPU %.2f s", postgres)) }
        return parts.joined(separator: ", ")
    }
}

/// The human-readable report and one `RESULT key=value …` line for scripts.
struct Report {
    private(set) var lines: [String] = []
    private var fields: [(String, String)] = []

    mutating func line(_ text: String) { lines.append(text) }

    mutating func field(_ key: String, _ value: String) { fields.append((key, value)) }
    mutating func field(_ key: String, _ value: Int) { field(key, String(value)) }
    mutating func field(_ key: String, _ value: Double?, decimals: Int = 1) {
        field(key, value.map { String(format: "%.\(decimals)f", $0) } ?? "-")
    }

    func print() {
        for line in lines { Swift.print(line) }
        Swift.print("RESULT " + fields.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
    }
}

func formatMiB(_ kib: Int?) -> String {
    guard let kib else { return "-" }
    return String(format: "%.1f MiB", Double(kib) / 1024)
}
