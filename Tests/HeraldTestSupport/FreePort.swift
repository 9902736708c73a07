import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Ports `freeTCPPort()` handed out or a test claimed (`claimTCPPort`) in this process. The kernel may choose a
/// closed port again, so without this two tests running side by side could be given the same one before either
/// binds it.
private let claimedPorts = Mutex<Set<Int>>([])

/// A TCP port on 127.0.0.1 that nothing listens on right now and that no other test of this process was given:
/// bind port 0, read what the kernel chose, close. Another process could take it before the caller does; the
/// window is small enough for tests.
public func freeTCPPort() -> Int {
    while true {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        precondition(fd >= 0, "socket() failed")
        defer { close(fd) }
        guard let port = bindToLoopback(fd) else { preconditionFailure("bind() failed") }
        if claimTCPPort(port) { return port }
    }
}

/// Claims `port` for the caller (a port a server derives from another, such as a Redis Cluster node's bus port):
/// `freeTCPPort()` will not hand it out. False if it was handed out or claimed already.
public func claimTCPPort(_ port: Int) -> Bool {
    claimedPorts.withLock { $0.insert(port).inserted }
}

/// Binds `fd` to a port of the kernel's choice on 127.0.0.1 and returns that port; nil if binding failed.
func bindToLoopback(_ fd: Int32) -> Int? {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
}

/// A port on 127.0.0.1 that refuses connections for as long as this object lives: bound and never listening, so
/// no other test can take it meanwhile (as it can a port from `freeTCPPort()`).
public final class RefusingPort: Sendable {
    public let port: Int
    private let fd: Int32

    public init() {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        precondition(fd >= 0, "socket() failed")
        guard let port = bindToLoopback(fd) else { preconditionFailure("bind() failed") }
        self.port = port
    }

    deinit { close(fd) }
}
