#ifndef HERALD_CEPOLL_SHIM_H
#define HERALD_CEPOLL_SHIM_H
// What Herald's own stream loops need of Linux that Glibc's Swift module leaves out: epoll, eventfd, accept4,
// naming a thread, growing the descriptor table (fcntl's variadic F_DUPFD_CLOEXEC).
// (Not through _GNU_SOURCE, which would give these headers' shared types another shape than other modules see.)
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/// accept4 without the peer's address, the new socket non-blocking and closed on exec.
static inline int cepoll_accept(int listener) {
    return (int)syscall(SYS_accept4, listener, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

/// The local port a socket is bound to, or -1.
static inline int cepoll_local_port(int socket) {
    struct sockaddr_storage address;
    socklen_t length = sizeof(address);
    if (getsockname(socket, (struct sockaddr *)&address, &length) != 0) return -1;
    if (address.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
    return ntohs(((struct sockaddr_in *)&address)->sin_port);
}

/// Grows this process's descriptor table at once to hold `count` descriptors (at most the soft RLIMIT_NOFILE):
/// the lowest free descriptor from `count - 1` up is taken and given back, and the table stays grown.
///
/// Why: Linux doubles a process's descriptor table when a new descriptor does not fit, and in a process with
/// several threads each doubling waits for an RCU grace period (expand_fdtable calls synchronize_rcu), several
/// milliseconds in which the thread that accepted (or opened) the socket stands still: a node taking a few
/// thousand connections at once paid that at 512, 1 024, 2 048 and 4 096 descriptors (docs/benchmarks.md).
/// Grown at start, the table never grows again; it costs the kernel eight bytes and a few bits per entry.
static inline void cepoll_grow_descriptor_table(long count) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && (rlim_t)count > limit.rlim_cur) {
        count = (long)limit.rlim_cur;
    }
    // Tables start at 64 entries and grow to 1 024 for a process's first descriptors anyway.
    if (count <= 1024 || count > (1L << 24)) return;
    int source = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (source < 0) return;
    int placed = fcntl(source, F_DUPFD_CLOEXEC, (int)(count - 1));
    if (placed >= 0) close(placed);
    close(source);
}

/// Names the calling thread (what `top -H` and /proc show; Linux keeps the first 15 bytes).
static inline void cepoll_name_thread(const char *name) {
    prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}
#endif
