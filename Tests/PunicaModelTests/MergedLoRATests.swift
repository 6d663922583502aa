import PunicaCompute
import PunicaCPU
import PunicaModel
import Testing
import TestSupport

/// A model with an adapter merged into its weights computes what the base model computes with that adapter's LoRA
/// delta, on the bundled model's adapters (scripture: every projection, rank 8; python: attention only, rank 16) and
/// on the Qwen and Gemma 2 fixtures (q/k/v biases, q/k norms and sandwich norms carried over).
@Suite struct MergedLoRATests {
    @Test(arguments: [(Fixtures.repositoryPath("models"), "scripture"), (Fixtures.repositoryPath("models"), "python"),
                      (Fixtures.path("models/qwen2-bias-window"), "alpha"), (Fixtures.path("models/qwen3-qknorm"), "delta"),
                      (Fixtures.path("models/gemma2-softcap"), "beta")])
    func mergedWeightsMatchTheLoRADelta(directory: String, adapterName: String) throws {
        let model = try LlamaModel(directory: directory, backend: CPUBackend())
        let adapter = try LoRAAdapter(name: adapterName, directory: "\(directory)/adapters/\(adapterName)", config: model.config,
                                      backend: model.backend)
        // More than 8 rows: the CPU backend's products for decode-sized batches are Swift loops, slow in debug builds.
        let tokens = [1, 517, 94, 2048, 33, 700, 12, 4095, 8000, 61, 300, 2].map { Int32($0 % model.config.vocabularySize) }
        func logits(_ model: LlamaModel, adapters: ResidentAdapters, segments: [LoRASegment]) -> [Float] {
            let rows = 0..<tokens.count
            let batch = StepBatch(tokens: tokens, sequences: [.init(rows: rows, contextLength: tokens.count, blockTable: [1])],
                                  loraSegments: segments, logitRows: Array(rows))
            let cache = model.makeKVCache(layout: PageLayout(pageSize: 16, pageCount: 2))
            return model.backend.toHost(model.forward(model.backend.plan(batch), cache: cache, adapters: adapters))
        }
        let withLoRA = logits(model, adapters: ResidentAdapters([adapter], layerCount: model.config.layerCount),
                              segments: [LoRASegment(rows: 0..<tokens.count, slot: 0)])
        let merged = logits(model.merging(adapter), adapters: .none, segments: [])
        let base = logits(model, adapters: .none, segments: [])
        let mismatch = closeMismatch(merged, withLoRA, atol: 2e-3, rtol: 1e-3)
        #expect(mismatch == nil, "\(mismatch ?? "")")
        // The adapter changes the logits far beyond that tolerance, so the comparison above is not vacuous.
        #expect(closeMismatch(base, withLoRA, atol: 2e-2, rtol: 0) != nil)
    }
}
