#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import PunicaCompute
import PunicaEngine
import PunicaModel
import Testing

/// Checks a backend's whole forward pass against the transformers + PEFT references, with the tolerances of its
/// number format.
public enum HFParity {
    public static let models = ["llama-gqa", "mistral-bf16", "qwen2-bias-window", "qwen3-qknorm", "phi3-fused", "phi3-longrope", "gemma2-softcap", "gemma3-local-rope"]

    /// Every case of the reference (each prompt × base and each adapter) runs as one sequence of a single mixed
    /// prefill step; logits at every prompt position match transformers + PEFT.
    public static func checkLogitsAtEveryPromptPosition(_ name: String, backend: Backend, atol: Float, rtol: Float) throws {
        let fixture = try LoadedFixture(name, backend: backend)
        try checkLogits(name, fixture.reference, adapterNames: fixture.adapterNames, atol: atol, rtol: rtol) { batch, layout in
            let resident = ResidentAdapters(fixture.adapters, layerCount: fixture.model.config.layerCount)
            return backend.toHost(fixture.model.forward(backend.plan(batch), cache: fixture.model.makeKVCache(layout: layout), adapters: resident))
        }
    }

    /// The same check on the model split over `backends.count` ranks by tensor parallelism (`TensorParallelModel`), its
    /// adapters split with it: rank r on `backends[r]`, talking through `collectives[r]`.
    public static func checkSplitLogitsAtEveryPromptPosition(_ name: String, backends: [Backend], collectives: [Collectives],
                                                            atol: Float, rtol: Float) throws {
        let directory = Fixtures.path("models/\(name)")
        let reference = try HFReference.load(name)
        let model = try TensorParallelModel(directory: directory, backends: backends, collectives: collectives)
        let adapterNames = reference.adapters.keys.sorted()
        let adapters = try model.residentAdapters { rank in
            try adapterNames.map {
                try LoRAAdapter(name: $0, directory: directory + "/" + reference.adapters[$0]!.path, config: rank.config,
                                backend: rank.backend, shard: rank.shard)
            }
        }
        try checkLogits(name, reference, adapterNames: adapterNames, atol: atol, rtol: rtol) { batch, layout in
            backends[0].toHost(model.forward(batch, caches: model.makeKVCaches(layout: layout), adapters: adapters))
        }
    }

    /// Runs every case as one sequence of a single step through `logits(batch, cache layout)` (the host copy of
    /// `forward`'s result, adapter slots in `adapterNames`' order) and compares each with the reference.
    private static func checkLogits(_ name: String, _ reference: HFReference, adapterNames: [String], atol: Float, rtol: Float,
                                    logits forward: (StepBatch, PageLayout) throws -> [Float]) throws {
        let expected = try SafeTensorsFile(path: Fixtures.path("models/\(name)/expected_logits.safetensors"))
        func slot(_ testCase: HFReference.Case) -> Int? { testCase.adapter.flatMap { adapterNames.firstIndex(of: $0) } }
        let cases = reference.cases.sorted { (slot($0) ?? -1) < (slot($1) ?? -1) }

        var tokens: [Int32] = []
        var sequences: [StepBatch.Sequence] = []
        var segments: [LoRASegment] = []
        var nextPage: Int32 = 1
        for testCase in cases {
            let prompt = reference.prompts[testCase.prompt_index]
            let rows = tokens.count ..< tokens.count + prompt.count
            tokens += prompt.map(Int32.init)
            let pages = (prompt.count + 3) / 4
            sequences.append(.init(rows: rows, contextLength: prompt.count, blockTable: (0..<pages).map { nextPage + Int32($0) }))
            nextPage += Int32(pages)
            if let slot = slot(testCase) { segments.append(LoRASegment(rows: rows, slot: slot)) }
        }
        let batch = StepBatch(tokens: tokens, sequences: sequences, loraSegments: segments, logitRows: Array(0..<tokens.count))
        let logits = try forward(batch, PageLayout(pageSize: 4, pageCount: Int(nextPage)))

        let vocabulary = logits.count / tokens.count
        for (testCase, sequence) in zip(cases, sequences) {
            let reference = try #require(expected.tensor(testCase.logits_key))
            let expectedLogits = [Float](UnsafeBufferPointer(start: reference.bytes.assumingMemoryBound(to: Float.self), count: reference.elementCount))
            let actual = Array(logits[sequence.rows.lowerBound * vocabulary ..< sequence.rows.upperBound * vocabulary])
            let mismatch = closeMismatch(actual, expectedLogits, atol: atol, rtol: rtol)
            #expect(mismatch == nil, "\(name) \(testCase.logits_key): \(mismatch ?? "")")
        }
    }

    /// All cases generate together through the serving engine (greedy): the same tokens as HF, logprobs close.
    public static func checkGreedyContinuationsInOneMixedBatch(_ name: String, backend: Backend, logprobTolerance: Float,
                                                              exactTopOrder: Bool) async throws {
        let fixture = try LoadedFixture(name, backend: backend)
        try await checkGreedyContinuations(name, fixture.reference, model: TensorParallelModel(ranks: [fixture.model]),
                                           logprobTolerance: logprobTolerance, exactTopOrder: exactTopOrder)
    }

    /// The same through the engine on the model split over `backends.count` ranks (`TensorParallelModel`).
    public static func checkSplitGreedyContinuationsInOneMixedBatch(_ name: String, backends: [Backend], collectives: [Collectives],
                                                                   logprobTolerance: Float, exactTopOrder: Bool) async throws {
        let model = try TensorParallelModel(directory: Fixtures.path("models/\(name)"), backends: backends, collectives: collectives)
        try await checkGreedyContinuations(name, try HFReference.load(name), model: model, logprobTolerance: logprobTolerance,
                                           exactTopOrder: exactTopOrder)
    }

    private static func checkGreedyContinuations(_ name: String, _ reference: HFReference, model: TensorParallelModel,
                                                 logprobTolerance: Float, exactTopOrder: Bool) async throws {
        var configuration = EngineConfiguration()
        configuration.pageSize = 4
        let engine = try await LoadedFixture.engine(name, reference, model: model, configuration: configuration)
        let requests = reference.cases.enumerated().map { index, testCase in
            var sampling = SamplingParameters()
            sampling.temperature = 0
            sampling.maxTokens = testCase.greedy.count
            sampling.ignoreEOS = true
            sampling.logprobs = testCase.logprobs[0].top.count
            return EngineRequest(id: String(index), promptIDs: reference.prompts[testCase.prompt_index],
                                 adapter: testCase.adapter, sampling: sampling)
        }
        let results = try await engine.complete(requests)
        await engine.drain()
        for (testCase, result) in zip(reference.cases, results) {
            let label = "\(name) \(testCase.logits_key)"
            #expect(result.tokenIDs == testCase.greedy, "\(label)")
            #expect(result.finishReason == .length)
            for (step, reported) in zip(testCase.logprobs, try #require(result.logprobs)) {
                // In reduced precision near-tied runners-up may swap: compare the order only where it is exact.
                if exactTopOrder {
                    let swapped = topOrderMismatch(reported, step.top, tolerance: logprobTolerance)
                    #expect(swapped == nil, "\(label): top tokens \(swapped ?? "")")
                }
                let common = step.top.filter { expected in reported.contains { $0.id == expected.id } }
                let mismatch = closeMismatch(common.map { expected in reported.first { $0.id == expected.id }!.logprob },
                                             common.map(\.logprob), atol: logprobTolerance)
                #expect(mismatch == nil, "\(label): \(mismatch ?? "")")
            }
        }
    }

    /// Every case's prompt scored through the serving engine (`promptLogprobs`, `maxTokens` 0), all at once with a
    /// token budget that splits prompts across steps: each prompt token's logprob, rank and top tokens are the
    /// log-softmax of transformers' logits at the position before it (ranks exactly only where rounding cannot swap
    /// near-ties: `exactRanks`).
    public static func checkPromptLogprobs(_ name: String, backend: Backend, atol: Float, exactRanks: Bool) async throws {
        let fixture = try LoadedFixture(name, backend: backend)
        let expected = try SafeTensorsFile(path: Fixtures.path("models/\(name)/expected_logits.safetensors"))
        var configuration = EngineConfiguration()
        configuration.pageSize = 4
        configuration.maxTokensPerStep = 5
        let engine = try await fixture.engine(configuration: configuration)
        let requests = fixture.reference.cases.enumerated().map { index, testCase in
            var sampling = SamplingParameters()
            sampling.maxTokens = 0
            sampling.promptLogprobs = 3
            return EngineRequest(id: String(index), promptIDs: fixture.reference.prompts[testCase.prompt_index],
                                 adapter: testCase.adapter, sampling: sampling)
        }
        let results = try await engine.complete(requests)
        await engine.drain()
        let vocabulary = fixture.model.config.vocabularySize
        for (testCase, result) in zip(fixture.reference.cases, results) {
            let label = "\(name) \(testCase.logits_key)"
            let prompt = fixture.reference.prompts[testCase.prompt_index]
            let reference = try #require(expected.tensor(testCase.logits_key))
            let logits = UnsafeBufferPointer(start: reference.bytes.assumingMemoryBound(to: Float.self), count: reference.elementCount)
            let scored = try #require(result.promptLogprobs, "\(label)")
            #expect(result.tokenIDs.isEmpty && result.finishReason == .length && scored.count == prompt.count - 1, "\(label)")
            for (position, reported) in scored.enumerated() {
                // log-softmax in double precision, the plain formula.
                let row = logits[position * vocabulary ..< (position + 1) * vocabulary].map(Double.init)
                let top = row.max()!
                let logNormalizer = top + log(row.reduce(0) { $0 + exp($1 - top) })
                let next = prompt[position + 1]
                #expect(reported.chosen.id == next, "\(label) position \(position)")
                let mismatch = closeMismatch([reported.chosen.logprob], [Float(row[next] - logNormalizer)], atol: atol)
                #expect(mismatch == nil, "\(label) position \(position): \(mismatch ?? "")")
                if exactRanks { #expect(reported.rank == 1 + row.filter { $0 > row[next] }.count, "\(label) position \(position): rank") }
                let best = row.indices.sorted { row[$0] > row[$1] }.prefix(3)
                #expect(closeMismatch(reported.top.map(\.logprob), best.map { Float(row[$0] - logNormalizer) }, atol: atol) == nil,
                        "\(label) position \(position): top logprobs")
            }
        }
    }

}
