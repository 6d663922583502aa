import PunicaCPU
import PunicaCompute
@testable import PunicaModel
import Testing
import TestSupport

/// Tensor parallelism on CPU ranks: threads of this process, each rank a model of its own on its own backend, meeting
/// in `CPUGroup`'s all-reduce and all-gather.
@Suite struct TensorParallelTests {
    /// Every fixture family split over 2 and 4 ranks, with its adapters: the logits at every prompt position are
    /// transformers + PEFT's (4 ranks give the fixtures' 2 KV heads, or Mistral's 1, a copy on each rank that reads it).
    @Test(arguments: HFParity.models, [2, 4])
    func splitModelsMatchTransformers(model: String, ranks: Int) throws {
        let group = CPUGroup(size: ranks)
        try HFParity.checkSplitLogitsAtEveryPromptPosition(model, backends: (0..<ranks).map { _ in CPUBackend() },
                                                           collectives: (0..<ranks).map(group.collectives), atol: 2e-3, rtol: 1e-3)
    }

    /// The serving engine on every fixture split over 2 CPU ranks, all cases in one mixed batch, adapters loaded through
    /// its host tier (a slab per rank): transformers' greedy tokens and logprobs, as the whole model's engine.
    @Test(arguments: HFParity.models)
    func theEngineOnASplitModelGeneratesTransformersTokens(model: String) async throws {
        let group = CPUGroup(size: 2)
        try await HFParity.checkSplitGreedyContinuationsInOneMixedBatch(model, backends: [CPUBackend(), CPUBackend()],
                                                                        collectives: (0..<2).map(group.collectives),
                                                                        logprobTolerance: 1e-3, exactTopOrder: true)
    }

    /// llama-gqa: 4 query heads, 2 KV heads, intermediate 176, vocabulary 768, hidden 64.
    @Test func shardsSplitHeadsIntermediateAndVocabulary() throws {
        let config = try ModelConfig.load(directory: Fixtures.path("models/llama-gqa"))
        let halves = try Shard.all(2, config: config, path: "config.json")
        #expect(halves.map { $0.attention(config.attention).queryHeads } == [2, 2])
        #expect(halves.map { $0.attention(config.attention).kvHeads } == [1, 1])
        let headDim = config.attention.headDim
        #expect(halves[1].slice(.q, config) == .rows([2 * headDim ..< 4 * headDim]))
        #expect(halves[1].slice(.k, config) == .rows([headDim ..< 2 * headDim]))
        #expect(halves[1].slice(.o, config) == .columns(2 * headDim ..< 4 * headDim))
        #expect(halves[1].slice(.up, config) == .rows([88..<176]))
        #expect(halves[1].slice(.down, config) == .columns(88..<176))
        // Fused checkpoints (Phi-3) take each part's rows of the one tensor.
        #expect(halves[1].slice(.gateUp, config) == .rows([88..<176, 264..<352]))
        let (queryWidth, kvWidth) = (config.attention.queryWidth, config.attention.kvWidth)
        #expect(halves[0].slice(.qkv, config) == .rows([0 ..< 2 * headDim, queryWidth ..< queryWidth + headDim,
                                                       queryWidth + kvWidth ..< queryWidth + kvWidth + headDim]))

        // Four ranks over two KV heads: ranks 0 and 1 keep head 0, ranks 2 and 3 head 1.
        let quarters = try Shard.all(4, config: config, path: "config.json")
        #expect(quarters.map { $0.slice(.v, config) } == [0, 0, 1, 1].map { .rows([$0 * headDim ..< ($0 + 1) * headDim]) })
        #expect(quarters.map { $0.vocabulary(768) } == [0..<192, 192..<384, 384..<576, 576..<768])
        // A vocabulary that does not divide: the first ranks take one token more, and the parts tile it.
        #expect(quarters.map { $0.vocabulary(770) } == [0..<193, 193..<386, 386..<578, 578..<770])
    }

    /// What the memory sizing reserves per adapter slot is what a rank's part of an adapter holds.
    @Test func adapterBytesAreThoseOfTheRanksPart() throws {
        let config = try ModelConfig.load(directory: Fixtures.path("models/llama-gqa"))
        let group = CPUGroup(size: 2)
        for shard in try Shard.all(2, config: config, path: "config.json") {
            let backend = CPUBackend()
            let model = LlamaModel.random(config: config, backend: backend, shard: shard, collectives: group.collectives(rank: shard.rank))
            let adapter = LoRAAdapter.random(name: "a", rank: 8, targets: Set(Projection.of(config)), config: config, backend: backend, seed: 1,
                                             shard: shard)
            let elements = adapter.weights.joined().compactMap { $0 }.reduce(0) { total, weights in
                total + weights.a.elementCount + weights.pieces.reduce(0) { $0 + $1.b.elementCount }
            }
            #expect(model.adapterBytes(rank: 8) == elements * 4, "\(shard)")  // the CPU's float32
        }
    }

    @Test func sizesThatCannotSplitTheModelAreRefusedByName() throws {
        let config = try ModelConfig.load(directory: Fixtures.path("models/llama-gqa"))
        for size in [3, 8, 0] {
            let error = #expect(throws: ModelError.self) { try Shard.all(size, config: config, path: "llama-gqa/config.json") }
            let field = size == 0 ? "tensor parallel size" : "num_attention_heads"
            #expect(error?.description.hasPrefix("llama-gqa/config.json: \(field) is ") == true, "\(error?.description ?? "")")
        }
    }

    /// Slices as runs of consecutive elements: what loading copies out of a checkpoint tensor.
    @Test func slicesAreRunsOfTheRowMajorMatrix() {
        #expect(WeightSlice.rows([1..<3, 5..<6]).runs(of: [6, 4]).map { [$0.start, $0.count] } == [[4, 8], [20, 4]])
        #expect(WeightSlice.columns(1..<3).runs(of: [3, 4]).map { [$0.start, $0.count] } == [[1, 2], [5, 2], [9, 2]])
        #expect(WeightSlice.rows([1..<3, 5..<6]).shape(of: [6, 4]) == [3, 4])
        #expect(WeightSlice.columns(1..<3).shape(of: [3, 4]) == [3, 2])
        #expect(WeightSlice.rows([2..<5]).shape(of: [8]) == [3])
    }
}
