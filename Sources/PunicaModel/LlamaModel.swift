import PunicaCompute

/// A paged KV cache for every layer of a model (see `PageLayout`).
public final class KVCache {
    public let layout: PageLayout
    let layers: [KVCacheLayer]

    init(layout: PageLayout, config: ModelConfig, backend: Backend) {
        self.layout = layout
        let shape = [layout.pageCount, layout.pageSize, config.attention.kvHeads, config.attention.headDim]
        layers = (0..<config.layerCount).map { _ in KVCacheLayer(keys: backend.persistentZeros(shape), values: backend.persistentZeros(shape)) }
    }
}

/// Weights of one decoder layer, q|k|v and gate|up fused so each is one GEMM.
struct LayerWeights {
    let inputNorm: Tensor   // [H]
    let qkv: Tensor         // [qWidth + 2·kvWidth, H]
    let o: Tensor           // [H, qWidth]
    let postNorm: Tensor    // [H]
    let gateUp: Tensor      // [2I, H]
    let down: Tensor        // [H, I]
}

/// A Llama-family decoder (Llama, Mistral) on a backend, with Punica's batched multi-LoRA forward pass.
public final class LlamaModel {
    public let config: ModelConfig
    public let backend: Backend
    let embedding: Tensor   // [vocab, H]
    let layers: [LayerWeights]
    let finalNorm: Tensor   // [H]
    let lmHead: Tensor      // [vocab, H]; the embedding itself when tied
    let inverseFrequencies: Tensor  // [headDim / 2]

    public convenience init(directory: String, backend: Backend) throws {
        let config = try ModelConfig.load(directory: directory)
        let checkpoint = try Checkpoint(directory: directory)
        // Fewer layers in config.json would silently run part of the model; more would fail on a missing tensor.
        guard checkpoint.layerCount == config.layerCount else {
            throw ModelError.invalidValue(path: directory + "/config.json", field: "num_hidden_layers",
                                          reason: "is \(config.layerCount) but the checkpoint has \(checkpoint.layerCount) layers")
        }
        try self.init(config: config, backend: backend, hasLMHead: checkpoint.contains("lm_head.weight")) { name, shape in
            let data = try checkpoint.tensor(name, shape: shape)
            return backend.weight(from: data.bytes, dtype: data.dtype, shape: shape)
        }
    }

    /// Random weights, uniform in ±1/√fan-in: for benchmarks, which need the shapes and not the values.
    public static func random(config: ModelConfig, backend: Backend, seed: UInt64 = 0) -> LlamaModel {
        var counter = seed
        return try! LlamaModel(config: config, backend: backend, hasLMHead: !config.tieWordEmbeddings) { _, shape in
            counter &+= 1
            return backend.randomWeight(shape: shape, scale: 1 / Float(shape.last!).squareRoot(), seed: counter)
        }
    }

    /// Binds every weight, by its checkpoint name and shape, once: `weight(name, shape)` supplies it.
    init(config: ModelConfig, backend: Backend, hasLMHead: Bool, weight: (_ name: String, _ shape: [Int]) throws -> Tensor) throws {
        func projection(_ parts: [Projection], layer: Int) throws -> Tensor {
            backend.concatenateRows(try parts.map { part in
                let (outputs, inputs) = part.weightShape(config)
                return try weight(part.checkpointName(layer: layer) + ".weight", [outputs, inputs])
            })
        }
        try backend.checkSupported(config.attention)
        let hidden = config.hiddenSize
        self.config = config
        self.backend = backend
        embedding = try weight("model.embed_tokens.weight", [config.vocabularySize, hidden])
        layers = try (0..<config.layerCount).map { layer in
            let prefix = "model.layers.\(layer)."
            return LayerWeights(
                inputNorm: try weight(prefix + "input_layernorm.weight", [hidden]),
                qkv: try projection(FusedProjection.qkv.parts, layer: layer),
                o: try projection(FusedProjection.o.parts, layer: layer),
                postNorm: try weight(prefix + "post_attention_layernorm.weight", [hidden]),
                gateUp: try projection(FusedProjection.gateUp.parts, layer: layer),
                down: try projection(FusedProjection.down.parts, layer: layer))
        }
        finalNorm = try weight("model.norm.weight", [hidden])
        // Tied checkpoints reuse the embedding; some also store the copy, which is then read like any weight.
        lmHead = config.tieWordEmbeddings && !hasLMHead ? embedding : try weight("lm_head.weight", [config.vocabularySize, hidden])
        let frequencies = config.rope.inverseFrequencies(headDim: config.attention.headDim)
        inverseFrequencies = backend.float32(frequencies, shape: [frequencies.count])
    }

    public func makeKVCache(layout: PageLayout) -> KVCache { KVCache(layout: layout, config: config, backend: backend) }

    /// Bytes of one token's keys and values over every layer.
    public var kvBytesPerToken: Int { 2 * config.layerCount * config.attention.kvWidth * activationBytes }

    /// Bytes of one element of the backend's activations and KV cache: the type norm gains are kept in on every
    /// backend (matrices may be narrower, as bfloat16 ones on the CPU).
    private var activationBytes: Int { finalNorm.dtype.byteSize }

    /// Device bytes a step of `rows` rows, `logitRows` of them sampled, allocates at its peak with LoRA of rank
    /// `loraRank`: `forward`'s buffers and the float32 logits sampling reads, doubled because pooled buffers are
    /// rounded up to powers of two. For sizing the KV cache around it.
    public func stepBytes(rows: Int, logitRows: Int, loraRank: Int) -> Int {
        let (hidden, attention, intermediate) = (config.hiddenSize, config.attention, config.intermediateSize)
        let rowElements = 4 * hidden + attention.qkvWidth + attention.queryWidth + 3 * intermediate
        let elements = rows * rowElements + logitRows * (hidden + config.vocabularySize)
        return 2 * (elements * activationBytes + 4 * (rows * loraRank + logitRows * config.vocabularySize))
    }

    /// Device bytes of one adapter of rank `rank` on every projection of every layer.
    public func adapterBytes(rank: Int) -> Int {
        let perLayer = Projection.allCases.reduce(0) { total, projection in
            let (outputs, inputs) = projection.weightShape(config)
            return total + rank * (inputs + outputs)
        }
        return config.layerCount * perLayer * activationBytes
    }

    /// Runs one step (`backend.plan(batch)`) and returns the next-token logits of `batch.logitRows`:
    /// [logitRows.count, vocab], on the backend.
    public func forward(_ plan: StepPlan, cache: KVCache, adapters: ResidentAdapters) -> Tensor {
        let batch = plan.batch
        precondition(batch.rowCount > 0, "a step needs at least one row")
        let rows = batch.rowCount
        let (hidden, attention, eps) = (config.hiddenSize, config.attention, config.rmsNormEpsilon)
        let x = backend.zeros([rows, hidden])                       // residual stream
        let normed = backend.zeros([rows, hidden])
        let qkv = backend.zeros([rows, attention.qkvWidth])
        let attended = backend.zeros([rows, attention.queryWidth])
        let projected = backend.zeros([rows, hidden])               // o and down outputs, added to x by the next norm
        let gateUp = backend.zeros([rows, 2 * config.intermediateSize])
        let activated = backend.zeros([rows, config.intermediateSize])
        let v = backend.float32Zeros([rows, max(adapters.maxRank, 1)])  // LoRA shrink output

        // y = x·Wᵀ for every row, then each adapter's segment adds its low-rank delta (Punica's SGMV).
        func linear(_ input: Tensor, _ weight: Tensor, _ fused: FusedProjection, layer: Int, into output: Tensor) {
            backend.matmul(x: input, weight: weight, out: output)
            guard let lora = adapters.projection(layer: layer, fused), plan.runsLoRA(lora) else { return }
            backend.loraShrink(x: input, projection: lora, plan: plan, v: v)
            backend.loraExpand(v: v, projection: lora, plan: plan, y: output)
        }

        backend.embedding(table: embedding, plan: plan, out: x)
        for (index, layer) in layers.enumerated() {
            let kv = cache.layers[index]
            if index == 0 {
                backend.rmsNorm(x: x, weight: layer.inputNorm, epsilon: eps, out: normed)
            } else {
                backend.addRMSNorm(residual: x, x: projected, weight: layer.inputNorm, epsilon: eps, out: normed)
            }
            linear(normed, layer.qkv, .qkv, layer: index, into: qkv)
            backend.rope(qkv: qkv, shape: attention, inverseFrequencies: inverseFrequencies, plan: plan)
            backend.appendKV(qkv: qkv, shape: attention, cache: kv, layout: cache.layout, plan: plan)
            backend.attention(qkv: qkv, shape: attention, cache: kv, layout: cache.layout, plan: plan, out: attended)
            linear(attended, layer.o, .o, layer: index, into: projected)

            backend.addRMSNorm(residual: x, x: projected, weight: layer.postNorm, epsilon: eps, out: normed)
            linear(normed, layer.gateUp, .gateUp, layer: index, into: gateUp)
            backend.siluMul(gateUp: gateUp, out: activated)
            linear(activated, layer.down, .down, layer: index, into: projected)
        }
        backend.addRMSNorm(residual: x, x: projected, weight: finalNorm, epsilon: eps, out: normed)

        // Only the rows that sample a token need the vocabulary projection, the largest GEMM of a decode step.
        let last = backend.zeros([batch.logitRows.count, hidden])
        backend.gatherLogitRows(x: normed, plan: plan, out: last)
        let logits = backend.zeros([batch.logitRows.count, config.vocabularySize])
        backend.matmul(x: last, weight: lmHead, out: logits)
        return logits
    }
}
