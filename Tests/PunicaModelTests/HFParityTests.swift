import PunicaCPU
import Testing
import TestSupport

/// The CPU backend computes in float32, like the references: tight tolerances.
@Suite struct HFParityTests {
    /// Every case of the reference (each prompt × base and each adapter) runs as one sequence of a single mixed
    /// prefill step; logits at every prompt position match transformers + PEFT.
    @Test(arguments: HFParity.models)
    func logitsAtEveryPromptPosition(model: String) throws {
        try HFParity.checkLogitsAtEveryPromptPosition(model, backend: CPUBackend(), atol: 2e-3, rtol: 1e-3)
    }

    /// All cases generate together through the batch generator (greedy): the same tokens as HF, logprobs close.
    @Test(arguments: HFParity.models)
    func greedyContinuationsInOneMixedBatch(model: String) async throws {
        try await HFParity.checkGreedyContinuationsInOneMixedBatch(model, backend: CPUBackend(), logprobTolerance: 1e-3, exactTopOrder: true)
    }

    /// Start-up says what the KV cache holds, element type included, and so do the engine's stats (the metrics'
    /// cache_dtype); a bfloat16 cache takes half the bytes per token.
    @Test func kvCacheSummaryNamesTheElementType() async throws {
        let float32 = try LoadedFixture("llama-gqa", backend: CPUBackend())
        let bfloat16 = try LoadedFixture("llama-gqa", backend: CPUBackend(bfloat16KVCache: true))
        #expect(2 * bfloat16.model.kvBytesPerToken == float32.model.kvBytesPerToken)
        let engines = try await (float32.engine(), bfloat16.engine())
        #expect(engines.0.kvCacheSummary.contains("in host memory, keys and values in F32;"))
        #expect(engines.1.kvCacheSummary.contains("in host memory, keys and values in BF16;"))
        #expect(engines.0.stats().kvCacheDType == .float32 && engines.1.stats().kvCacheDType == .bfloat16)
    }

    /// Prompts scored through the engine (prompt logprobs, chunked prefill): transformers' log-softmax.
    @Test(arguments: HFParity.models)
    func promptLogprobsThroughTheEngine(model: String) async throws {
        try await HFParity.checkPromptLogprobs(model, backend: CPUBackend(), atol: 1e-3, exactRanks: true)
    }
}
