#ifndef HERALD_CEPOLL_SHIM_H
#define HERALD_CEPOLL_SHIM_H
// What Herald's own stream loops need of Linux that Glibc's Swift module leaves out: epoll, eventfd, accept4,
// naming a thread.
// (Not through _GNU_SOURCE, which would give these headers' shared types another shape than other modules see.)
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
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

/// Names the calling thread (what `top -H` and /proc show; Linux keeps the first 15 bytes).
static inline void cepoll_name_thread(const char *name) {
    prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}
#endif
