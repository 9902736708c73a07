import Foundation
@testable import HeraldCore
import Testing

/// `NativeDeltaReader` against Foundation's `JSONDecoder` reading the same members: whatever the reader takes, the
/// decoder takes with the same values; the deltas engines send are taken (not left to the slow path).
@Suite("native delta reader: the same answers as JSONDecoder, or none")
struct NativeDeltaReaderTests {
    /// What the general decoder reads of a native delta.
    struct Reference: Decodable {
        var event: String
        var run_id: String?
        var thread_id: String?
        var delta: String
        var index: Double?
    }

    static func reference(_ bytes: [UInt8]) -> NativeDeltaReader.Fields? {
        guard let decoded = try? JSONDecoder().decode(Reference.self, from: Data(bytes)) else { return nil }
        var index: Int?
        if let number = decoded.index {
            guard number >= 0, number.rounded() == number, number < 1e15 else { return nil }
            index = Int(number)
        }
        return .init(event: decoded.event, runID: decoded.run_id, threadID: decoded.thread_id, delta: decoded.delta, index: index)
    }

    /// The reader's answer, checked against the decoder's.
    @discardableResult
    static func agree(_ text: String) -> NativeDeltaReader.Fields? {
        agree(Array(text.utf8))
    }

    @discardableResult
    static func agree(_ bytes: [UInt8]) -> NativeDeltaReader.Fields? {
        let read = NativeDeltaReader.read(bytes)
        if let read {
            #expect(read == reference(bytes), "\(String(decoding: bytes, as: UTF8.self))")
        }
        return read
    }

    @Test("what engines send is read, with escapes, surrogate pairs, whitespace, nulls and unknown members")
    func taken() {
        let run = UUID().uuidString.lowercased()
        let cases: [(String, String)] = [
            (#"{"run_id":"\#(run)","event":"delta","index":3,"delta":"hello"}"#, "hello"),
            (#" { "event" : "delta" , "delta" : "a\"b\\c\/d\n\t\r\b\f" , "run_id" : null , "index" : null } "#, "a\"b\\c/d\n\t\r\u{8}\u{c}"),
            (#"{"event":"delta","delta":"\u00e9\u20AC\ud83d\ude00 é 😀","extra":[]}"#, ""),
            (#"{"event":"delta","delta":"","thread_id":null,"x":1.5e-3,"y":true,"z":false,"w":"s","v":-0}"#, ""),
            (#"{"event":"delta","delta":"\u2028 line separator","index":0}"#, "\u{2028} line separator"),
        ]
        for (text, delta) in cases.prefix(2) + cases.suffix(2) {
            let read = Self.agree(text)
            #expect(read?.delta == delta, "\(text)")
        }
        // A nested value in an unknown member is left to the general way.
        #expect(Self.agree(cases[2].0) == nil)
        #expect(Self.agree(#"{"event":"delta","delta":"\u00e9\u20AC\ud83d\ude00 é 😀"}"#)?.delta == "é€😀 é 😀")
    }

    @Test("anything unusual or wrong is left to the general decoder", arguments: [
        "", "{", "[]", "null", #"{"event":"delta"}"#, #"{"delta":"x"}"#,
        #"{"event":"delta","delta":"x"} x"#, #"{"event":"delta","delta":"x",}"#, #"{"event":"delta" "delta":"x"}"#,
        #"{"event":"delta","delta":"x","delta":"y"}"#, #"{"event":"delta","delta":5}"#, #"{"event":1,"delta":"x"}"#,
        #"{"event":"delta","delta":"x","index":-1}"#, #"{"event":"delta","delta":"x","index":1.0}"#,
        #"{"event":"delta","delta":"x","index":1e3}"#, #"{"event":"delta","delta":"x","index":01}"#,
        #"{"event":"delta","delta":"x","index":"1"}"#, #"{"event":"delta","delta":"x","index":12345678901}"#,
        #"{"event":"delta","delta":"\u0000"}"#, #"{"event":"delta","delta":"\ud800"}"#, #"{"event":"delta","delta":"\udc00\ud800"}"#,
        #"{"event":"delta","delta":"\x"}"#, #"{"event":"delta","delta":"\u12"}"#, "{\"event\":\"delta\",\"delta\":\"a\nb\"}",
        #"{"event":"delta","delta":"x","run_id":5}"#, #"{"event":"delta","delta":"x","o":{}}"#, #"{"event":"delta","delta":"x","n":01}"#,
        #"{"event":"delta","delta":"x","n":1.}"#, #"{"event":"delta","delta":"x","n":tru}"#, #"{"event":"delta","delta":"unterminated}"#,
    ])
    func declined(text: String) {
        #expect(Self.agree(text) == nil)
    }

    @Test("invalid UTF-8 is declined")
    func invalidUTF8() {
        for bad: [UInt8] in [[0xC3], [0xFF], [0xED, 0xA0, 0x80], [0xC0, 0xAF]] {
            let bytes = Array(#"{"event":"delta","delta":""#.utf8) + bad + Array(#""}"#.utf8)
            #expect(Self.agree(bytes) == nil)
        }
    }

    @Test("random deltas and random damage to them: the reader never disagrees with the decoder, and reads every plain one")
    func randomized() {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [String] = ["a", " ", "é", "😀", "\\n", "\\\"", "\\\\", "\\u00e9", "\\ud83d\\ude00", "\\/", "\\t", "<", "\u{2028}"]
        var taken = 0
        for _ in 0..<3000 {
            var members = [
                #""event":"delta""#,
                #""delta":""# + (0..<Int.random(in: 0...12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }.joined() + "\"",
                #""run_id":"\#(UUID().uuidString.lowercased())""#,
            ]
            if Bool.random(using: &generator) { members.append(#""index":\#(Int.random(in: 0...1_000_000, using: &generator))"#) }
            if Bool.random(using: &generator) { members.append(#""thread_id":null"#) }
            if Bool.random(using: &generator) { members.append(#""model":"gpt","n":-1.25E+2,"ok":true"#) }
            members.shuffle(using: &generator)
            let space = [" ", "", "\n", "\t"].randomElement(using: &generator)!
            var bytes = Array(("{" + space + members.joined(separator: "," + space) + space + "}").utf8)
            if Self.agree(bytes) != nil { taken += 1 } else { Issue.record("a plain delta was declined: \(String(decoding: bytes, as: UTF8.self))") }
            // Damage: a byte changed, dropped or doubled somewhere.
            for _ in 0..<4 {
                let at = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &generator)
                case 1: bytes.remove(at: at)
                default: bytes.insert(bytes[at], at: at)
                }
                Self.agree(bytes)
            }
        }
        #expect(taken == 3000)
    }
}
