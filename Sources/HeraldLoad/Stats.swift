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
            return Int(line.dropFirst("VmRSS:".count).split(separator: " ").first ?? "")
        }
        return nil
    }

    /// User + system CPU seconds (`utime`, `stime` of /proc/PID/stat).
    static func cpuSeconds(_ pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm) ": field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// CPU seconds of Herald, Redis and this process over an interval.
struct CPUSample {
    var herald: Double?
    var redis: Double?
    var own: Double

    static func take(herald: Int32?, redis: Int32?) -> CPUSample {
        CPUSample(herald: herald.flatMap(ProcessProbe.cpuSeconds), redis: redis.flatMap(ProcessProbe.cpuSeconds), own: ProcessProbe.ownCPUSeconds())
    }

    static func - (after: CPUSample, before: CPUSample) -> CPUSample {
        func minus(_ a: Double?, _ b: Double?) -> Double? {
            guard let a, let b else { return nil }
            return a - b
        }
        return CPUSample(herald: minus(after.herald, before.herald), redis: minus(after.redis, before.redis), own: after.own - before.own)
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
