import Foundation
import PunicaCompute
import PunicaEngine
import Testing
import TestSupport

@Suite struct SamplerTests {
    func sample(_ logits: [Float], _ parameters: SamplingParameters, history: [Int] = []) -> Int {
        var sampler = Sampler(parameters)
        let choice = sampler.choice(history: history)
        return logits.withUnsafeBufferPointer { choice.pick($0) }
    }

    func parameters(temperature: Float = 1, topK: Int = 0, topP: Float = 1, penalty: Float = 1, seed: UInt64? = 7) -> SamplingParameters {
        var parameters = SamplingParameters()
        parameters.temperature = temperature
        parameters.topK = topK
        parameters.topP = topP
        parameters.repetitionPenalty = penalty
        parameters.seed = seed
        return parameters
    }

    /// Frequencies of 20 000 draws from one sampler.
    func frequencies(_ logits: [Float], _ parameters: SamplingParameters) -> [Double] {
        var sampler = Sampler(parameters)
        var counts = [Double](repeating: 0, count: logits.count)
        logits.withUnsafeBufferPointer { buffer in
            for _ in 0..<20_000 { counts[sampler.choice(history: []).pick(buffer)] += 1 }
        }
        return counts.map { $0 / 20_000 }
    }

    let logits: [Float] = [0.5, 0.3, 0.2, 0.0].map { $0 == 0 ? -Float.infinity : log($0) }

    @Test func greedyPicksTheLargestLogit() {
        #expect(sample([0.1, 2.5, -1, 2.4], parameters(temperature: 0)) == 1)
    }

    @Test func temperatureOneFollowsTheModelDistribution() {
        let observed = frequencies(logits, parameters())
        for (seen, expected) in zip(observed, [0.5, 0.3, 0.2, 0]) { #expect(abs(seen - expected) < 0.02, "\(observed)") }
    }

    @Test func lowTemperatureSharpens() {
        #expect(frequencies(logits, parameters(temperature: 0.25))[0] > 0.8)
    }

    @Test func topKKeepsTheKMostLikely() {
        let observed = frequencies(logits, parameters(topK: 2))
        #expect(observed[2] == 0 && abs(observed[0] - 0.625) < 0.02)
    }

    @Test func topPKeepsTheSmallestSetReachingP() {
        let observed = frequencies(logits, parameters(topP: 0.75))
        #expect(observed[2] == 0 && abs(observed[0] - 0.625) < 0.02, "\(observed)")
    }

    @Test func thresholdsKeepTiesTogether() {
        let tied: [Float] = [1, 2, 2, 0]
        let kept = { (choice: TokenChoice) in tied.withUnsafeBufferPointer { choice.keptWeights($0).map(\.token) } }
        #expect(kept(TokenChoice(temperature: 1, topK: 1)) == [1, 2])
        #expect(kept(TokenChoice(temperature: 1, topP: 0.1)) == [1, 2])
        #expect(kept(TokenChoice(temperature: 1, topK: 3, topP: 0.99)) == [0, 1, 2])
    }

    @Test func theDrawWalksKeptTokensInVocabularyOrder() {
        let logits: [Float] = [0, log(3), -Float.infinity, 0]  // weights 1/3, 1, 0, 1/3 of the max
        let pick = { (uniform: Float) in logits.withUnsafeBufferPointer { TokenChoice(temperature: 1, uniform: uniform).pick($0) } }
        #expect([0.1, 0.3, 0.9, 0.999].map(pick) == [0, 1, 3, 3])
    }

    /// NaN or +∞ anywhere, or −∞ everywhere, and the row cannot be sampled: `nonFinite`, never an index out of range.
    /// −∞ on some tokens is a mask and samples normally; a penalty that overflows to +∞ counts like a +∞ logit.
    @Test func nonFiniteRowsGiveTheSentinel() {
        let rows: [[Float]] = [[.nan, .nan, .nan], [0.5, .nan, 1], [0.5, .infinity, 1], [-.infinity, -.infinity, -.infinity], []]
        for row in rows {
            for choice in [TokenChoice.greedy, TokenChoice(temperature: 1, topK: 2, topP: 0.9, uniform: 0.5),
                           TokenChoice(temperature: 0.7, uniform: 0.99, repetitionPenalty: 1.2, penalized: [0, 2, -5, 99])] {
                #expect(row.withUnsafeBufferPointer { choice.pick($0) } == TokenChoice.nonFinite, "\(row) \(choice)")
            }
        }
        #expect([-.infinity, 2, -.infinity].withUnsafeBufferPointer { TokenChoice(temperature: 1, uniform: 0.9).pick($0) } == 1)
        let overflowing = TokenChoice(temperature: 1, repetitionPenalty: 0.01, penalized: [0])
        #expect([3e37, 1].withUnsafeBufferPointer { overflowing.pick($0) } == TokenChoice.nonFinite)
    }

    @Test func sameSeedSameTokensWhateverTheBatch() {
        var first = Sampler(parameters(seed: 42)), second = Sampler(parameters(seed: 42))
        let draws = logits.withUnsafeBufferPointer { buffer in
            ((0..<50).map { _ in first.choice(history: []).pick(buffer) }, (0..<50).map { _ in second.choice(history: []).pick(buffer) })
        }
        #expect(draws.0 == draws.1 && Set(draws.0).count > 1)
    }

    @Test func repetitionPenaltyDemotesSeenTokens() {
        #expect(sample([2.0, 1.9, -3], parameters(temperature: 0, penalty: 2), history: [0]) == 1)
        // A negative logit is multiplied, pushing it further down.
        #expect(sample([-1.0, -1.2], parameters(temperature: 0, penalty: 2), history: [0]) == 1)
    }

    @Test func validationNamesTheFieldAndLimit() {
        var parameters = SamplingParameters()
        parameters.topP = 1.5
        #expect(throws: RequestError.invalid(field: "top_p", reason: "must be > 0 and <= 1. Given: 1.5")) { try parameters.validate() }
        parameters = SamplingParameters()
        parameters.logprobs = 21
        #expect(throws: RequestError.invalid(field: "logprobs", reason: "must be >= 0 and <= 20. Given: 21")) { try parameters.validate() }
        parameters = SamplingParameters()
        parameters.maxTokens = -1
        #expect(throws: RequestError.invalid(field: "max_tokens", reason: "must be >= 0. Given: -1")) { try parameters.validate() }
        parameters = SamplingParameters()
        parameters.minTokens = 17
        #expect(throws: RequestError.invalid(field: "min_tokens", reason: "must be >= 0 and <= max_tokens (16). Given: 17")) { try parameters.validate() }
        parameters = SamplingParameters()
        parameters.logitBias = [3: 101]
        #expect(throws: RequestError.invalid(field: "logit_bias", reason: "must be values >= -100 and <= 100. Given: 101.0 for token 3")) {
            try parameters.validate()
        }
        for (field, change) in [("presence_penalty", { (p: inout SamplingParameters) in p.presencePenalty = 2.5 }),
                                ("frequency_penalty", { $0.frequencyPenalty = -3 }), ("min_p", { $0.minP = 1.5 })] {
            parameters = SamplingParameters()
            change(&parameters)
            #expect(throws: RequestError.self) { try parameters.validate() }
            do { try parameters.validate() } catch { #expect("\(error)".contains(field)) }
        }
    }

    /// vLLM's order on random logits: logit_bias, then the repetition penalty (prompt and output tokens), then
    /// frequency and presence penalties (output tokens only, by count), written out plainly; the sampler's choice
    /// keeps exactly those weights.
    @Test func penaltiesAndBiasFollowVLLMsFormula() {
        var random = SplitMix64(seed: 3)
        let vocab = 50
        let logits = (0..<vocab).map { _ in Float.random(in: -4...4, using: &random) }
        let prompt = [1, 2, 3, 3, 7], output = [3, 7, 7, 7, 9, 40]
        var parameters = parameters(temperature: 1, penalty: 1.3)
        parameters.presencePenalty = 0.4
        parameters.frequencyPenalty = 0.25
        parameters.logitBias = [2: 1.5, 9: -2, 11: 3]
        var sampler = Sampler(parameters, promptLength: prompt.count)
        let choice = sampler.choice(history: prompt + output)
        var expected = logits
        for (token, bias) in parameters.logitBias { expected[token] += bias }
        for token in Set(prompt + output) { expected[token] = expected[token] > 0 ? expected[token] / 1.3 : expected[token] * 1.3 }
        for token in Set(output) {
            let count = Float(output.filter { $0 == token }.count)
            expected[token] -= 0.25 * count + 0.4
        }
        let top = expected.max()!
        let kept = logits.withUnsafeBufferPointer { choice.keptWeights($0) }
        #expect(kept.map(\.token) == Array(0..<vocab))
        let mismatch = closeMismatch(kept.map(\.weight), expected.map { exp($0 - top) }, atol: 1e-6, rtol: 1e-5)
        #expect(mismatch == nil, "\(mismatch ?? "")")
    }

    /// min_p keeps tokens whose probability at the temperature is at least min_p × the largest, before top-k.
    @Test func minPKeepsTokensNearTheMostLikely() {
        var random = SplitMix64(seed: 9)
        let logits = (0..<200).map { _ in Float.random(in: -6...6, using: &random) }
        for (minP, temperature, topK) in [(Float(0.1), Float(1), 0), (0.5, 0.7, 0), (0.02, 1.5, 10), (1, 1, 0)] {
            let choice = TokenChoice(temperature: temperature, topK: topK, minP: minP)
            let probabilities = logits.map { exp(Double($0) / Double(temperature)) }
            let largest = probabilities.max()!
            var expected = logits.indices.filter { probabilities[$0] >= Double(minP) * largest * (1 - 1e-5) }
            if topK > 0 { expected = Array(expected.sorted { logits[$0] > logits[$1] }.prefix(topK)).sorted() }
            #expect(logits.withUnsafeBufferPointer { choice.keptWeights($0).map(\.token) } == expected, "min_p \(minP)")
        }
    }

    /// End-of-sequence and stop tokens are masked until min_tokens are generated (EOS not, when ignored).
    @Test func minTokensMasksEndTokens() {
        var parameters = parameters(temperature: 0)
        parameters.minTokens = 2
        parameters.stopTokenIDs = [1]
        let logits: [Float] = [0, 5, 4, 3]  // 1 is a stop token, 2 EOS
        let pick = { (parameters: SamplingParameters, generated: Int) in
            var sampler = Sampler(parameters, promptLength: 1, eos: [2])
            return logits.withUnsafeBufferPointer { sampler.choice(history: [0] + Array(repeating: 3, count: generated)).pick($0) }
        }
        #expect([0, 1, 2].map { pick(parameters, $0) } == [3, 3, 1])
        parameters.stopTokenIDs = []
        #expect(pick(parameters, 0) == 1, "only end tokens are masked")
        parameters.ignoreEOS = true
        parameters.stopTokenIDs = [1]
        #expect(pick(parameters, 0) == 2, "EOS is not an end token when ignored")
    }
}

@Suite struct BlockAllocatorTests {
    @Test func neverHandsOutPageZeroAndRefusesWhatItLacks() {
        var allocator = BlockAllocator(pageCount: 5)
        let pages = allocator.allocate(4)
        #expect(pages.map(Set.init) == [1, 2, 3, 4])
        #expect(allocator.allocate(1) == nil && allocator.freeCount == 0)
        allocator.release(pages!)
        #expect(allocator.freeCount == 4 && allocator.usedCount == 0)
    }

    /// Random sequences grow and end; no page is ever owned twice and every page comes back.
    @Test func randomizedOwnershipNeverOverlapsAndNothingLeaks() {
        var random = SystemRandomNumberGenerator()
        var allocator = BlockAllocator(pageCount: 64)
        var owners: [[Int32]] = []
        for _ in 0..<2000 {
            if Bool.random(using: &random), let pages = allocator.allocate(Int.random(in: 1...6, using: &random)) {
                owners.append(pages)
            } else if !owners.isEmpty {
                allocator.release(owners.remove(at: Int.random(in: 0..<owners.count, using: &random)))
            }
            let all = owners.flatMap { $0 }
            #expect(Set(all).count == all.count && !all.contains(0))
            #expect(allocator.usedCount == all.count)
        }
        for pages in owners { allocator.release(pages) }
        #expect(allocator.freeCount == 63)
    }
}
