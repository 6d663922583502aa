import PunicaCompute
import Testing
@testable import punica

@Suite struct TextgenWorkloadTests {
    @Test func lengthDistributionsParseFixedAndRange() {
        #expect(LengthDistribution(argument: "32")?.range == 32...32)
        #expect(LengthDistribution(argument: "16-64")?.range == 16...64)
        #expect(LengthDistribution(argument: "16-64")?.description == "16-64")
        for bad in ["", "0", "64-16", "a", "1-2-3", "-5", "5-", "0-4"] { #expect(LengthDistribution(argument: bad) == nil, "\(bad)") }
    }

    @Test func samplesCoverTheRangeAndNothingElse() {
        var random = SplitMix64(seed: 1)
        let samples = (0..<500).map { _ in LengthDistribution(3...6).sample(using: &random) }
        #expect(Set(samples) == [3, 4, 5, 6])
        #expect((0..<10).allSatisfy { _ in LengthDistribution(7...7).sample(using: &random) == 7 })
    }

    @Test func workloadIsDeterminedByItsSeed() {
        func workload(seed: UInt64) -> TextgenWorkload {
            TextgenWorkload(count: 20, promptTokens: LengthDistribution(4...8), outputTokens: LengthDistribution(2...5),
                            vocabularySize: 100, seed: seed)
        }
        let first = workload(seed: 9)
        #expect(first.requests.count == 20)
        #expect(first.requests.allSatisfy { (4...8).contains($0.promptIDs.count) && (2...5).contains($0.outputTokens) })
        #expect(first.requests.allSatisfy { $0.promptIDs.allSatisfy { (3..<100).contains($0) } })
        #expect(first.generatedTokens == first.requests.reduce(0) { $0 + $1.outputTokens })
        #expect(workload(seed: 9).requests.map(\.promptIDs) == first.requests.map(\.promptIDs))
        #expect(workload(seed: 10).requests.map(\.promptIDs) != first.requests.map(\.promptIDs))
    }

    /// Greedy, end-of-sequence ignored: each request generates exactly its output length, on the adapter asked for.
    @Test func engineRequestsGenerateExactlyTheirOutputLength() {
        let workload = TextgenWorkload(count: 4, promptTokens: LengthDistribution(4...4), outputTokens: LengthDistribution(1...9),
                                       vocabularySize: 50, seed: 2)
        let requests = workload.engineRequests([1, 3]) { $0 == 1 ? "alpha" : nil }
        #expect(requests.map(\.adapter) == ["alpha", nil] && requests.map(\.promptIDs) == [workload.requests[1].promptIDs, workload.requests[3].promptIDs])
        #expect(requests.map(\.sampling.maxTokens) == [workload.requests[1].outputTokens, workload.requests[3].outputTokens])
        #expect(requests.allSatisfy { $0.sampling.temperature == 0 && $0.sampling.ignoreEOS })
    }
}
