import CCurl
import NIOConcurrencyHelpers

/// Status line and headers of a response whose body is still arriving.
public struct CurlResponseHead: Sendable {
    public let status: Int
    public let headers: [(name: String, value: String)]

    /// The first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first(named: name)
    }
}

/// A response read while it arrives: the head at once, then the body piece by piece.
public struct CurlStreamingResponse: Sendable {
    public let head: CurlResponseHead
    /// The body as curl receives it. Ends when the transfer ends; throws `CurlError` if it fails. Dropping it, or
    /// cancelling the task that reads it, stops the transfer and closes its connection.
    public let body: CurlResponseBody
}

/// The pieces of a streamed body, in order, each as it came off the socket.
public struct CurlResponseBody: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    let pieces: AsyncThrowingStream<[UInt8], any Error>
    let sink: ResponseStreamSink

    public struct AsyncIterator: AsyncIteratorProtocol {
        var pieces: AsyncThrowingStream<[UInt8], any Error>.AsyncIterator
        let sink: ResponseStreamSink

        public mutating func next() async throws -> [UInt8]? {
            let piece = try await pieces.next()
            if let piece { sink.consumed(piece.count) }
            return piece
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(pieces: pieces.makeAsyncIterator(), sink: sink)
    }
}

extension CurlHTTPClient {
    /// Runs one request whose response body is read while it arrives (a Server-Sent-Events stream, say): returns
    /// once the head is in, and the body follows through `body`. Pieces the reader has not taken yet are kept up
    /// to `maxPendingBytes`; a reader that falls further behind fails the transfer rather than growing memory.
    /// `request.maxResponseBodySize` does not apply; `request.timeout` bounds the whole transfer as usual.
    public func stream(_ request: CurlRequest, maxPendingBytes: Int = 1 << 20) async throws -> CurlStreamingResponse {
        try Task.checkCancellation()
        let (pieces, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        let sink = ResponseStreamSink(pieces: continuation, maxPendingBytes: maxPendingBytes)
        let transfer = try Transfer(request: request, trusting: caFile, streamingTo: sink)
        // The driver owns the transfer for its whole life; ending the body (reader gone or cancelled) cancels it.
        let driver = Task { [self] in
            do {
                sink.complete(.success(try await run(transfer)))
            } catch {
                sink.complete(.failure(error))
            }
        }
        continuation.onTermination = { termination in
            if case .cancelled = termination { driver.cancel() }
        }
        let head = try await withTaskCancellationHandler {
            try await sink.head()
        } onCancel: {
            driver.cancel()
        }
        return CurlStreamingResponse(head: head, body: CurlResponseBody(pieces: pieces, sink: sink))
    }
}

/// Where a streamed transfer's head and body go: the loop thread delivers, the reader's task takes.
final class ResponseStreamSink: Sendable {
    private enum Head {
        case pending
        case waiting(CheckedContinuation<CurlResponseHead, any Error>)
        case ready(Result<CurlResponseHead, any Error>)
        case taken
    }

    private struct State {
        var head = Head.pending
        var pendingBytes = 0
        var fellBehind = false
    }

    private let pieces: AsyncThrowingStream<[UInt8], any Error>.Continuation
    private let maxPendingBytes: Int
    private let state = NIOLockedValueBox(State())

    init(pieces: AsyncThrowingStream<[UInt8], any Error>.Continuation, maxPendingBytes: Int) {
        self.pieces = pieces
        self.maxPendingBytes = maxPendingBytes
    }

    /// The head, once the first body piece or the end of the transfer has settled it.
    func head() async throws -> CurlResponseHead {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<CurlResponseHead, any Error>? = state.withLockedValue { state in
                switch state.head {
                case .ready(let result):
                    state.head = .taken
                    return result
                case .pending:
                    state.head = .waiting(continuation)
                    return nil
                case .waiting, .taken:
                    preconditionFailure("the head of a streamed response is awaited once")
                }
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// Loop thread: one body piece. Returns false to fail the transfer (the reader is too far behind).
    func receive(_ bytes: UnsafeRawBufferPointer, head: () -> CurlResponseHead) -> Bool {
        let (accepted, headSettled) = state.withLockedValue { state in
            let headSettled: Bool
            switch state.head {
            case .pending, .waiting: headSettled = false
            case .ready, .taken: headSettled = true
            }
            guard state.pendingBytes + bytes.count <= maxPendingBytes else {
                state.fellBehind = true
                return (false, headSettled)
            }
            state.pendingBytes += bytes.count
            return (true, headSettled)
        }
        guard accepted else { return false }
        if !headSettled { settleHead(.success(head())) }
        pieces.yield(Array(bytes))
        return true
    }

    /// Reader: `count` bytes were taken off the stream.
    func consumed(_ count: Int) {
        state.withLockedValue { $0.pendingBytes -= count }
    }

    /// The transfer ended: a response (its body, if any, already streamed) or an error.
    func complete(_ result: Result<CurlResponse, any Error>) {
        switch result {
        case .success(let response):
            settleHead(.success(CurlResponseHead(status: response.status, headers: response.headers)))
            pieces.finish()
        case .failure(var error):
            if state.withLockedValue({ $0.fellBehind }) {
                error = CurlError(CURLE_WRITE_ERROR, message: "the reader fell more than \(maxPendingBytes) bytes behind the response")
            }
            settleHead(.failure(error))
            pieces.finish(throwing: error)
        }
    }

    /// Hands the head to whoever waits for it, once; later calls do nothing.
    private func settleHead(_ result: Result<CurlResponseHead, any Error>) {
        let waiting: CheckedContinuation<CurlResponseHead, any Error>? = state.withLockedValue { state in
            switch state.head {
            case .pending:
                state.head = .ready(result)
                return nil
            case .waiting(let continuation):
                state.head = .taken
                return continuation
            case .ready, .taken:
                return nil
            }
        }
        waiting?.resume(with: result)
    }
}
