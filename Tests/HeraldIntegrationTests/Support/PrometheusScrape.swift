import Foundation
import HeraldTestSupport

/// One `/metrics` scrape, parsed (Prometheus text format 0.0.4): each sample's name, labels and value.
struct PrometheusScrape {
    struct Sample {
        let name: String
        let labels: [String: String]
        let value: Double
    }

    let text: String
    let samples: [Sample]

    static func scrape(_ base: String) async throws -> PrometheusScrape {
        let response = try await TestHTTPClient.request("GET", "\(base)/metrics")
        return PrometheusScrape(text: response.text)
    }

    init(text: String) {
        self.text = text
        samples = text.split(separator: "\n").compactMap { line in
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                return nil
            }
            let series = line[..<space]
            guard let brace = series.firstIndex(of: "{") else { return Sample(name: String(series), labels: [:], value: value) }
            var labels: [String: String] = [:]
            // Label values here never contain `",` (they are route patterns, status codes and fixed names).
            for pair in series[series.index(after: brace)..<series.index(before: series.endIndex)].components(separatedBy: "\",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else { continue }
                labels[String(parts[0])] = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
            return Sample(name: String(series[..<brace]), labels: labels, value: value)
        }
    }

    /// The samples of `name` whose labels include all of `labels`.
    func values(_ name: String, _ labels: [String: String] = [:]) -> [Double] {
        samples.filter { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }.map(\.value)
    }

    /// The sum over the samples of `name` matching `labels` (nil when there is none).
    func total(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = values(name, labels)
        return matching.isEmpty ? nil : matching.reduce(0, +)
    }

    /// Every label set `name` has.
    func labelSets(_ name: String) -> [[String: String]] {
        samples.filter { $0.name == name }.map(\.labels)
    }
}
