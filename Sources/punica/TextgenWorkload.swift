import ArgumentParser
import PunicaCompute
import PunicaEngine

/// Lengths of the benchmark's prompts or outputs: fixed (`32`) or uniform over a range (`16-64`, both ends
/// included), drawn from a seeded generator.
struct LengthDistribution: ExpressibleByArgument, CustomStringConvertible, Equatable {
    let range: ClosedRange<Int>

    init(_ range: ClosedRange<Int>) { self.range = range }

    init?(argument: String) {
        let parts = argument.split(separator: "-", omittingEmptySubsequences: false)
        let bounds = parts.compactMap { Int($0) }
        guard bounds.count == parts.count, (1...2).contains(bounds.count), let low = bounds.first, let high = bounds.last,
              low >= 1, low <= high else { return nil }
        range = low...high
    }

    var description: String { range.count == 1 ? "\(range.lowerBound)" : "\(range.lowerBound)-\(range.upperBound)" }
    var defaultValueDescription: String { description }

    func sample(using random: inout SplitMix64) -> Int { Int.random(in: range, using: &random) }
}

/// The requests every system and popularity of `punica bench textgen` serves: prompt and output lengths, and the
/// prompts' random token ids, drawn once from the seed. Sampling is greedy and ignores end-of-sequence tokens, so
/// each request generates exactly its output length.
struct TextgenWorkload {
    struct Request {
        let promptIDs: [Int]
        let outputTokens: Int
    }

    let requests: [Request]

    init(count: Int, promptTokens: LengthDistribution, outputTokens: LengthDistribution, vocabularySize: Int, seed: UInt64) {
        var random = SplitMix64(seed: seed)
        requests = (0..<count).map { _ in
            let promptLength = promptTokens.sample(using: &random)
            // Ids 0–2 are special tokens (unknown, begin, end) in most Llama vocabularies.
            let prompt = (0..<promptLength).map { _ in Int.random(in: 3..<vocabularySize, using: &random) }
            return Request(promptIDs: prompt, outputTokens: outputTokens.sample(using: &random))
        }
    }

    var generatedTokens: Int { requests.reduce(0) { $0 + $1.outputTokens } }

    /// Engine requests for the requests at `indices`, each on the adapter `adapter(index)` (nil: the base model).
    func engineRequests(_ indices: [Int], adapter: (Int) -> String?) -> [EngineRequest] {
        indices.map { index in
            var sampling = SamplingParameters()
            sampling.temperature = 0
            sampling.maxTokens = requests[index].outputTokens
            sampling.ignoreEOS = true
            return EngineRequest(id: "textgen-\(index)", promptIDs: requests[index].promptIDs, adapter: adapter(index), sampling: sampling)
        }
    }
}
