import NIOCore

/// Where one stream's bytes go: the client's channel, seen by the hub as a sink it writes shared frame buffers
/// to. Used only on the event loop of that channel, which is why it needs no locking and is not `Sendable`.
public protocol StreamSink: AnyObject {
    /// False while the client is behind (its channel's outbound buffer is past the high-water mark): frames wait
    /// in the stream's bounded queue until `StreamConnection.sinkBecameWritable()`.
    var isWritable: Bool { get }
    /// Queues `frame` on the channel without flushing.
    func write(_ frame: OutgoingFrame)
    /// Sends what was queued, in one `writev` where the transport can.
    func flush()
    /// `write` then `flush`, when nothing else is queued: one pass down the channel's pipeline instead of two.
    func writeAndFlush(_ frame: OutgoingFrame)
    /// Closes the client's connection (a slow consumer is disconnected, not merely forgotten).
    func close()
}

extension StreamSink {
    public func writeAndFlush(_ frame: OutgoingFrame) {
        write(frame)
        flush()
    }
}
