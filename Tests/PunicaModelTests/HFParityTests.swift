#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCPU
import PunicaCompute
import PunicaEngine
import PunicaModel
import Testing
import TestSupport

/// The reference outputs written by scripts/make_model_fixtures.py (transformers + PEFT, float32 compute).
struct HFReference: Decodable {
    struct Case: Decodable {
        let prompt_index: Int
        let adapter: String?
        let logits_key: String
        let greedy: [Int]
        let logprobs: [Step]
    }

    struct Step: Decodable {
        let id: Int
        let token_logprob: Float
        let top: [TokenLogprob]
    }

    let prompts: [[Int]]
    let cases: [Case]
    let adapters: [String: AdapterInfo]

    struct AdapterInfo: Decodable { let path: String }

    static func load(_ model: String) throws -> HFReference {
        try JSONDecoder().decode(HFReference.self, from: Fixtures.data("models/\(model)/expected.json"))
    }
}

/// A fixture model with every adapter of its reference loaded, adapter i in slot i.
struct LoadedFixture {
    let reference: HFReference
    let model: LlamaModel
    let adapterNames: [String]
    let adapters: [LoRAAdapter]

    init(_ name: String) throws {
        let directory = Fixtures.path("models/\(name)")
        let reference = try HFReference.load(name)
        let model = try LlamaModel(directory: directory, backend: CPUBackend())
        let adapterNames = reference.adapters.keys.sorted()
        adapters = try adapterNames.map {
            try LoRAAdapter(name: $0, directory: directory + "/" + reference.adapters[$0]!.path, config: model.config, backend: model.backend)
        }
        (self.reference, self.model, self.adapterNames) = (reference, model, adapterNames)
    }
}

@Suite struct HFParityTests {
    static let models = ["llama-gqa", "mistral-bf16"]

    /// Every case of the reference (each prompt × base and each adapter) runs as one sequence of a single mixed
    /// prefill step; logits at every prompt position match transformers + PEFT.
    @Test(arguments: models)
    func logitsAtEveryPromptPosition(model name: String) throws {
        let fixture = try LoadedFixture(name)
        let expected = try SafeTensorsFile(path: Fixtures.path("models/\(name)/expected_logits.safetensors"))
        let cases = fixture.reference.cases.sorted { (slot($0, fixture) ?? -1) < (slot($1, fixture) ?? -1) }

        var tokens: [Int32] = []
        var sequences: [StepBatch.Sequence] = []
        var segments: [LoRASegment] = []
        var nextPage: Int32 = 1
        for testCase in cases {
            let prompt = fixture.reference.prompts[testCase.prompt_index]
            let rows = tokens.count ..< tokens.count + prompt.count
            tokens += prompt.map(Int32.init)
            let pages = (prompt.count + 3) / 4
            sequences.append(.init(rows: rows, contextLength: prompt.count, blockTable: (0..<pages).map { nextPage + Int32($0) }))
            nextPage += Int32(pages)
            if let slot = slot(testCase, fixture) { segments.append(LoRASegment(rows: rows, slot: slot)) }
        }
        let cache = fixture.model.makeKVCache(layout: PageLayout(pageSize: 4, pageCount: Int(nextPage)))
        let resident = ResidentAdapters(fixture.adapters, layerCount: fixture.model.config.layerCount)
        let logits = fixture.model.forward(StepBatch(tokens: tokens, sequences: sequences, loraSegments: segments,
                                                     logitRows: Array(0..<tokens.count)), cache: cache, adapters: resident)

        let vocabulary = fixture.model.config.vocabularySize
        for (testCase, sequence) in zip(cases, sequences) {
            let reference = try #require(expected.tensor(testCase.logits_key))
            let expectedLogits = [Float](UnsafeBufferPointer(start: reference.bytes.assumingMemoryBound(to: Float.self), count: reference.elementCount))
            let actual = Array(logits[sequence.rows.lowerBound * vocabulary ..< sequence.rows.upperBound * vocabulary])
            let mismatch = closeMismatch(actual, expectedLogits, atol: 2e-3, rtol: 1e-3)
            #expect(mismatch == nil, "\(name) \(testCase.logits_key): \(mismatch ?? "")")
        }
    }

    /// All cases generate together through the batch generator (greedy): the same tokens as HF, logprobs close.
    @Test(arguments: models)
    func greedyContinuationsInOneMixedBatch(model name: String) throws {
        let fixture = try LoadedFixture(name)
        let generator = BatchGenerator(model: fixture.model, tokenizer: nil, adapters: fixture.adapters, pageSize: 4)
        let requests = fixture.reference.cases.enumerated().map { index, testCase in
            var sampling = SamplingParameters()
            sampling.temperature = 0
            sampling.maxTokens = testCase.greedy.count
            sampling.ignoreEOS = true
            sampling.logprobs = testCase.logprobs[0].top.count
            return GenerationRequest(id: String(index), promptIDs: fixture.reference.prompts[testCase.prompt_index],
                                     adapter: testCase.adapter, sampling: sampling)
        }
        let results = try generator.generate(requests)
        for (testCase, result) in zip(fixture.reference.cases, results) {
            let label = "\(name) \(testCase.logits_key)"
            #expect(result.tokenIDs == testCase.greedy, "\(label)")
            #expect(result.finishReason == .length)
            for (step, reported) in zip(testCase.logprobs, try #require(result.logprobs)) {
                #expect(reported.map(\.id) == step.top.map(\.id), "\(label): top tokens")
                let mismatch = closeMismatch(reported.map(\.logprob), step.top.map(\.logprob), atol: 1e-3)
                #expect(mismatch == nil, "\(label): \(mismatch ?? "")")
            }
        }
    }

    private func slot(_ testCase: HFReference.Case, _ fixture: LoadedFixture) -> Int? {
        testCase.adapter.flatMap { fixture.adapterNames.firstIndex(of: $0) }
    }
}
