import Glibc
import HeraldCore

/// This process's table of file descriptors, grown once at start to what the node's connections will need.
///
/// Linux doubles a process's descriptor table when a new descriptor does not fit, and in a process with several
/// threads each doubling waits for an RCU grace period (`expand_fdtable` calls `synchronize_rcu`): several
/// milliseconds in which the thread that accepted the connection stands still. A node that takes a few thousand
/// connections at once (clients reconnecting after a deploy) paid that at 512, 1 024, 2 048 and 4 096 descriptors
/// (`docs/benchmarks.md`). Grown at start, while nothing waits on it, the table never grows again; it costs the
/// kernel eight bytes and a few bits per entry, and the process nothing.
enum DescriptorTable {
    /// Grows the table to hold `count` descriptors (at most the soft `RLIMIT_NOFILE`).
    static func reserve(_ count: Int) {
        let highest = Int32(clamping: min(count, ConnectionLimits.currentFileDescriptorLimit()) - 1)
        // Tables start at 64 entries, and grow to 1 024 for the node's own descriptors anyway.
        guard highest >= 1024 else { return }
        let source = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard source >= 0 else { return }
        // The lowest free descriptor at or above `highest`: the table grows to take it, and stays grown.
        let placed = fcntl(source, F_DUPFD_CLOEXEC, highest)
        if placed >= 0 { close(placed) }
        close(source)
    }
}
