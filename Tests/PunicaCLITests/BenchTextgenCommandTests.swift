import Foundation
import Testing
import TestSupport

/// `punica bench textgen` at a tiny size on the bundled model: every system for every popularity, written as JSON,
/// CSV and a PNG chart.
@Suite struct BenchTextgenCommandTests {
    struct Report: Decodable {
        struct Result: Decodable {
            let popularity: String
            let system: String
            let adapters: Int
            let requests: Int
            let generatedTokens: Int
            let seconds: Double
            let tokensPerSecond: Double
        }
        let batchSize: Int
        let results: [Result]
    }

    /// Sized for a debug build: the two smallest bundled adapters keep merging quick, and one generated token per
    /// request makes each system's run a single prefill step.
    @Test func tinyRunReportsEverySystemForEveryPopularity() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("textgen-\(UUID().uuidString)").path
        let model = Fixtures.repositoryPath("models")
        let run = try punica(["bench", "textgen", "--model", model, "--adapter", "python=\(model)/adapters/python",
                              "--adapter", "scripture=\(model)/adapters/scripture", "--batch-size", "4",
                              "--prompt-tokens", "9-12", "--max-tokens", "1", "--repeats", "1", "--out", out])
        #expect(run.status == 0, "\(run.error)")
        #expect(run.output.contains("| popularity | adapters |"))

        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let report = try decoder.decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/textgen.json")))
        #expect(report.batchSize == 4)
        let expectedAdapters = ["distinct": 4, "uniform": 2, "skewed": 2, "identical": 1]
        for (popularity, adapters) in expectedAdapters {
            for system in ["batched", "per_adapter", "merged", "base"] {
                let matching = report.results.filter { $0.popularity == popularity && $0.system == system }
                #expect(matching.count == 1, "\(popularity) \(system)")
                guard let result = matching.first else { continue }
                #expect(result.adapters == adapters && result.requests == 4 && result.generatedTokens == 4)
                #expect(result.seconds > 0 && result.tokensPerSecond > 0)
            }
        }

        let csv = try String(contentsOfFile: out + "/textgen.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.first == "popularity,system,adapters,requests,generated_tokens,seconds,tokens_per_second")
        #expect(csv.count == 17 && csv.dropFirst().allSatisfy { $0.split(separator: ",").count == 7 })

        let png = try [UInt8](Data(contentsOf: URL(fileURLWithPath: out + "/textgen.png")))
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        #expect(bigEndian(png, at: 16) == 960 && bigEndian(png, at: 20) == 540)
    }
}
