import Foundation
import Testing

@testable import HeraldHTTP

@Suite("the Date header")
struct HTTPDateCacheTests {
    @Test("IMF-fixdate, as Foundation formats it, for dates across days, months and years")
    func format() {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        var generator = SystemRandomNumberGenerator()
        let seconds = [0, 784_111_777, 951_782_400, 1_764_547_199] + (0..<500).map { _ in Int.random(in: 0...4_102_444_800, using: &generator) }
        for second in seconds {
            #expect(HTTPDateCache.format(second) == formatter.string(from: Date(timeIntervalSince1970: TimeInterval(second))))
        }
        #expect(HTTPDateCache.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        let before = Int(Date().timeIntervalSince1970)
        let now = HTTPDateCache().now
        let after = Int(Date().timeIntervalSince1970)
        #expect(now == HTTPDateCache.format(before) || now == HTTPDateCache.format(after))
    }
}
