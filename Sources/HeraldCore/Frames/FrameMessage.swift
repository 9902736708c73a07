import Foundation
import NIOCore

/// SSE frames as JSON messages, for transports that carry messages rather than a text stream (WebSocket):
/// `{"type":"event","thread_id":…,"id":…,"event":…,"data":…}` carrying exactly the frame's id, event name and
/// JSON data. The data is spliced in as it is (frames hold one line of JSON each, see `FrameEncoder.body`), so
/// a frame is converted without decoding it.
public enum FrameMessage {
    /// One message per event in `frames` (several complete frames may be in one buffer, as in a catch-up);
    /// comments, `retry:` lines and blocks without data (the preamble, comment heartbeats) make none.
    public static func messages(of frames: ByteBuffer, thread: UUID) -> [[UInt8]] {
        frames.withUnsafeReadableBytes { bytes in
            var messages: [[UInt8]] = []
            var event = Event()
            var lineStart = 0
            while lineStart < bytes.count {
                let lineEnd = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
                let line = UnsafeRawBufferPointer(rebasing: bytes[lineStart..<lineEnd])
                lineStart = lineEnd + 1
                if line.isEmpty {
                    if let message = event.message(thread: thread) { messages.append(message) }
                    event = Event()
                    continue
                }
                event.read(line)
            }
            if let message = event.message(thread: thread) { messages.append(message) }
            return messages
        }
    }

    /// The fields of one SSE event block, as the spec reads them (`name: value`, one optional space).
    private struct Event {
        var id: [UInt8]?
        var name: [UInt8]?
        var data: [UInt8]?

        mutating func read(_ line: UnsafeRawBufferPointer) {
            guard line.first != UInt8(ascii: ":") else { return }
            let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.count
            var valueStart = Swift.min(colon + 1, line.count)
            if valueStart < line.count, line[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
            let field = line[..<colon]
            let value = Array(line[valueStart...])
            if field.elementsEqual("id".utf8) {
                id = value
            } else if field.elementsEqual("event".utf8) {
                name = value
            } else if field.elementsEqual("data".utf8) {
                if data == nil {
                    data = value
                } else {
                    data?.append(UInt8(ascii: "\n"))
                    data?.append(contentsOf: value)
                }
            }
        }

        func message(thread: UUID) -> [UInt8]? {
            guard let data else { return nil }
            var json: [UInt8] = []
            json.reserveCapacity(data.count + 120)
            json.append(contentsOf: #"{"type":"event","thread_id":""#.utf8)
            json.append(contentsOf: thread.text.utf8)
            json.append(UInt8(ascii: "\""))
            if let id {
                json.append(contentsOf: #","id":"#.utf8)
                FrameEncoder.appendJSONString(String(decoding: id, as: UTF8.self), to: &json)
            }
            json.append(contentsOf: #","event":"#.utf8)
            FrameEncoder.appendJSONString(name.map { String(decoding: $0, as: UTF8.self) } ?? "message", to: &json)
            json.append(contentsOf: #","data":"#.utf8)
            json.append(contentsOf: data)
            json.append(UInt8(ascii: "}"))
            return json
        }
    }
}
