// libFuzzer harness for the webhook decoder and the SSE frame builder. Built by scripts/fuzz.sh, which compiles
// this file together with the few HeraldCore sources it needs (no NIO, no package build), with
// `-sanitize=fuzzer,address`.
//
// For any bytes: `WebhookDecoder.decode` returns or throws, never crashes; what `NativeDeltaReader` reads,
// JSONDecoder reads the same. For what the decoder accepts, every frame built from it holds the SSE invariants the
// hub relies on: `event: NAME\ndata: JSON\n\n` with NAME in the fixed set,
// the JSON on one line (no CR or LF inside), exactly three LFs, and the payload decodes back to what was encoded.
import Foundation

private let threadID = UUID(uuidString: "484e2cd0-5fff-40ff-81c1-16d719ca3536")!
private let runID = UUID(uuidString: "0b7c1a52-6a8d-4c55-9d4c-2f8e1f0a9d11")!
private let messageID = UUID(uuidString: "7d1e5e0c-3f7a-4f1f-8a53-93b1b0c6f2aa")!
private let newline = UInt8(ascii: "\n")
private let carriageReturn = UInt8(ascii: "\r")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWebhook(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = UnsafeBufferPointer(start: data, count: size)
    // The native delta reader takes nothing that JSONDecoder would read differently.
    if let read = NativeDeltaReader.read(body) {
        precondition(read == decodedDelta(body), "NativeDeltaReader disagrees with JSONDecoder")
    }
    // With and without a run id from the callback URL: the two take different paths through the decoder.
    for urlRunID in [nil, runID] {
        guard let event = try? WebhookDecoder.decode(body, runIDFromURL: urlRunID) else { continue }
        for streamEvent in streamEvents(for: event, body: body) {
            check(streamEvent)
        }
    }
    return 0
}

/// A native delta's members as JSONDecoder reads them (nil when it does not, or for an index the reader never takes).
private func decodedDelta(_ body: UnsafeBufferPointer<UInt8>) -> NativeDeltaReader.Fields? {
    struct Delta: Decodable {
        var event: String
        var run_id: String?
        var thread_id: String?
        var delta: String
        var index: Double?
    }
    guard let decoded = try? JSONDecoder().decode(Delta.self, from: Data(body)) else { return nil }
    var index: Int?
    if let number = decoded.index {
        guard number >= 0, number.rounded() == number, number < 1e15 else { return nil }
        index = Int(number)
    }
    return .init(event: decoded.event, runID: decoded.run_id, threadID: decoded.thread_id, delta: decoded.delta, index: index)
}

/// The frames the hub would publish for `event` (and a few more, to push engine-controlled text everywhere).
private func streamEvents(for event: WebhookEvent, body: UnsafeBufferPointer<UInt8>) -> [StreamEvent] {
    // Arbitrary JSON as message metadata: the encoder must cope with whatever the decoder can produce.
    let metadata = (try? JSONDecoder().decode(JSONValue.self, from: Data(body))) ?? .null
    var events: [StreamEvent] = []
    switch event {
    case .final(let reference, let status, let reply, let error):
        let message = ChatMessage(
            id: messageID, threadID: reference.threadID ?? threadID, runID: reference.runID, role: .assistant,
            content: reply ?? error?.message ?? "", status: error == nil ? "complete" : "error", metadata: metadata,
            createdAt: "2026-11-21T10:00:00.000000Z"
        )
        events.append(.messageUpdate(.init(threadID: message.threadID, runID: reference.runID, message: message)))
        events.append(.runStatus(.init(threadID: message.threadID, runID: reference.runID ?? runID, status: status)))
        if let error {
            events.append(.error(.init(threadID: message.threadID, runID: reference.runID ?? runID, error: error)))
        }
        if let engineRunID = reference.engineRunID {
            events.append(.resync(.init(threadID: message.threadID, reason: engineRunID)))
        }
    case .delta(let reference, let index, let text):
        events.append(.delta(.init(
            threadID: reference.threadID ?? threadID, runID: reference.runID ?? runID, messageID: messageID,
            index: index ?? 0, delta: text
        )))
    case .status(let reference, let status):
        events.append(.runStatus(.init(threadID: reference.threadID ?? threadID, runID: reference.runID ?? runID, status: status)))
        events.append(.threadDeleted(.init(threadID: reference.threadID ?? threadID)))
    }
    return events
}

private func check(_ event: StreamEvent) {
    let frame = FrameEncoder.body(of: event)
    let name = Array("event: \(event.name.rawValue)\ndata: ".utf8)
    require(StreamEventName(rawValue: event.name.rawValue) != nil, "event name outside the fixed set")
    require(frame.starts(with: name), "frame does not start with its event line")
    require(frame.count >= name.count + 2 && frame.suffix(2).elementsEqual([newline, newline]), "frame does not end with a blank line")
    require(frame.lazy.filter { $0 == newline }.count == 3, "frame has other than 3 LFs")
    require(!frame.contains(carriageReturn), "frame contains a CR")
    let json = Data(frame[name.count..<(frame.count - 2)])
    let roundTrip: Bool
    do {
        let decoder = JSONDecoder()
        roundTrip = switch event {
        case .messageUpdate(let payload): try decoder.decode(StreamEvent.MessageUpdate.self, from: json) == payload
        case .delta(let payload): try decoder.decode(StreamEvent.Delta.self, from: json) == payload
        case .runStatus(let payload): try decoder.decode(StreamEvent.RunStatusUpdate.self, from: json) == payload
        case .error(let payload): try decoder.decode(StreamEvent.RunError.self, from: json) == payload
        case .threadDeleted(let payload): try decoder.decode(StreamEvent.ThreadDeleted.self, from: json) == payload
        case .resync(let payload): try decoder.decode(StreamEvent.Resync.self, from: json) == payload
        }
    } catch {
        broken("frame data is not the JSON of its payload: \(error)")
    }
    require(roundTrip, "frame data does not decode back to the payload")
}

/// `precondition`, but with its message printed in -O builds (where `precondition` traps silently).
private func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { broken(message()) }
}

private func broken(_ message: String) -> Never {
    fatalError("invariant broken: \(message)")
}
