import PunicaCompute

/// A paged KV cache for every layer of a model (see `PageLayout`), of the model's KV heads (a rank's, when split).
public final class KVCache {
    public let layout: PageLayout
    let layers: [KVCacheLayer]

    init(layout: PageLayout, layerCount: Int, attention: AttentionShape, backend: Backend) {
        self.layout = layout
        let shape = [layout.pageCount, layout.pageSize, attention.kvHeads, attention.headDim]
        layers = (0..<layerCount).map { _ in KVCacheLayer(keys: backend.kvCacheZeros(shape), values: backend.kvCacheZeros(shape)) }
    }
}

/// Weights of one decoder layer, q|k|v and gate|up fused so each is one GEMM, and the layer's head layout: a rank's
/// heads and part of the intermediate width I when the model is split (`Shard`).
struct LayerWeights {
    let attention: AttentionShape   // with this layer's sliding window
    let inverseFrequencies: Tensor  // [headDim / 2], this layer's RoPE (Gemma 3's sliding layers have their own)
    let ropeScale: Float            // cos and sin times this (LongRoPE's attention factor)
    let inputNorm: Tensor   // [H]
    let qkv: Tensor         // [qWidth + 2·kvWidth, H]
    let qkvBias: Tensor?    // [qWidth + 2·kvWidth] (Qwen2)
    let queryKeyNorm: (query: Tensor, key: Tensor)?  // [headDim] each (Qwen3)
    let o: Tensor           // [H, qWidth]
    let attentionOutputNorm: Tensor?  // [H], on o's output (Gemma 2)
    let postNorm: Tensor    // [H], before the MLP (post_attention_layernorm; Gemma 2: pre_feedforward_layernorm)
    let gateUp: Tensor      // [2I, H]
    let down: Tensor        // [H, I]
    let mlpOutputNorm: Tensor?  // [H], on down's output (Gemma 2)
}

/// A Llama-family decoder (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 2 and 3) on a backend, with Punica's batched
/// multi-LoRA forward pass: the whole model, or one rank's part of it split by tensor parallelism (`Shard`).
public final class LlamaModel {
    public let config: ModelConfig
    public let backend: Backend
    /// The part of the model this one holds, and what it does together with the other ranks' parts (nil when whole).
    public let shard: Shard
    let collectives: Collectives?
    /// The head layout of every layer's part here (the sliding window is per layer: `LayerWeights.attention`).
    public let attention: AttentionShape
    /// The tokens whose rows `embedding` and `lmHead` hold.
    let vocabulary: Range<Int>
    let embedding: Tensor   // [vocab part, H]
    let layers: [LayerWeights]
    let finalNorm: Tensor   // [H]
    let lmHead: Tensor      // [vocab part, H]; the embedding itself when tied

    /// - Parameters: shard, collectives: this rank's part of a split model and its collectives with the other ranks
    ///   (each rank a model of its own, on its own backend).
    public convenience init(directory: String, backend: Backend, shard: Shard = .whole, collectives: Collectives? = nil) throws {
        let config = try ModelConfig.load(directory: directory)
        let checkpoint = try Checkpoint(directory: directory)
        // Fewer layers in config.json would silently run part of the model; more would fail on a missing tensor.
        guard checkpoint.layerCount == config.layerCount else {
            throw ModelError.invalidValue(path: directory + "/config.json", field: "num_hidden_layers",
                                          reason: "is \(config.layerCount) but the checkpoint has \(checkpoint.layerCount) layers")
        }
        try self.init(config: config, backend: backend, shard: shard, collectives: collectives,
                      hasLMHead: checkpoint.contains("lm_head.weight")) { name, shape, slice in
            let data = try checkpoint.tensor(name, shape: shape)
            guard config.normWeightsAddOne && name.hasSuffix("norm.weight") else {
                return data.withSlice(slice) { backend.weight(from: $0, dtype: data.dtype, shape: slice.shape(of: shape)) }
            }
            // Gemma's RMSNorm scales by (1 + w): folded in once, so every norm op reads a plain gain.
            var gain = [Float](repeating: 0, count: data.elementCount)
            HalfConversion.toFloat32(data.bytes, dtype: data.dtype, count: gain.count, into: &gain)
            return gain.map { $0 + 1 }.withUnsafeBytes { backend.weight(from: $0.baseAddress!, dtype: .float32, shape: shape) }
        }
    }

    /// Random weights, uniform in ±1/√fan-in: for benchmarks, which need the shapes and not the values.
    public static func random(config: ModelConfig, backend: Backend, seed: UInt64 = 0, shard: Shard = .whole,
                              collectives: Collectives? = nil) -> LlamaModel {
        var counter = seed
        return try! LlamaModel(config: config, backend: backend, shard: shard, collectives: collectives,
                               hasLMHead: !config.tieWordEmbeddings) { _, shape, slice in
            counter &+= 1
            return backend.randomWeight(shape: slice.shape(of: shape), scale: 1 / Float(shape.last!).squareRoot(), seed: counter)
        }
    }

    /// Binds every weight, by its checkpoint name and shape, once: `weight(name, shape, slice)` supplies the part of
    /// it that `shard` holds.
    init(config: ModelConfig, backend: Backend, shard: Shard = .whole, collectives: Collectives? = nil, hasLMHead: Bool,
         weight: (_ name: String, _ shape: [Int], _ slice: WeightSlice) throws -> Tensor) throws {
        precondition(shard.count == 1 || collectives != nil, "the ranks of a split model need collectives")
        func whole(_ name: String, _ shape: [Int]) throws -> Tensor { try weight(name, shape, .whole(rows: shape[0])) }
        func projection(_ parts: [Projection], layer: Int) throws -> Tensor {
            backend.concatenateRows(try parts.map { part in
                let (outputs, inputs) = part.weightShape(config)
                return try weight(part.checkpointName(layer: layer) + ".weight", [outputs, inputs], shard.slice(part, config))
            })
        }
        attention = shard.attention(config.attention)
        try backend.checkSupported(attention)
        let hidden = config.hiddenSize
        self.config = config
        self.backend = backend
        self.shard = shard
        self.collectives = collectives
        vocabulary = shard.vocabulary(config.vocabularySize)
        embedding = try weight("model.embed_tokens.weight", [config.vocabularySize, hidden], .rows([vocabulary]))
        let frequencies = Dictionary(uniqueKeysWithValues: Set((0..<config.layerCount).map(config.rope(layer:))).map { rope in
            let values = rope.inverseFrequencies(headDim: config.attention.headDim)
            return (rope, backend.float32(values, shape: [values.count]))
        })
        layers = try (0..<config.layerCount).map { layer in
            let prefix = "model.layers.\(layer)."
            let headDim = config.attention.headDim
            return LayerWeights(
                attention: shard.attention(config.attention(layer: layer)),
                inverseFrequencies: frequencies[config.rope(layer: layer)]!,
                ropeScale: config.rope(layer: layer).attentionScaling,
                inputNorm: try whole(prefix + "input_layernorm.weight", [hidden]),
                qkv: try projection(FusedProjection.qkv.parts(config), layer: layer),
                qkvBias: config.qkvBias ? backend.concatenateRows(try FusedProjection.qkv.parts(config).map { part in
                    try weight(part.checkpointName(layer: layer) + ".bias", [part.weightShape(config).outputs], shard.slice(part, config))
                }) : nil,
                queryKeyNorm: config.queryKeyNorm ? (try whole(prefix + "self_attn.q_norm.weight", [headDim]),
                                                     try whole(prefix + "self_attn.k_norm.weight", [headDim])) : nil,
                o: try projection(FusedProjection.o.parts(config), layer: layer),
                attentionOutputNorm: config.sandwichNorms ? try whole(prefix + "post_attention_layernorm.weight", [hidden]) : nil,
                postNorm: try whole(prefix + (config.sandwichNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"), [hidden]),
                gateUp: try projection(FusedProjection.gateUp.parts(config), layer: layer),
                down: try projection(FusedProjection.down.parts(config), layer: layer),
                mlpOutputNorm: config.sandwichNorms ? try whole(prefix + "post_feedforward_layernorm.weight", [hidden]) : nil)
        }
        finalNorm = try whole("model.norm.weight", [hidden])
        // Tied checkpoints reuse the embedding; some also store the copy, which is then read like any weight.
        lmHead = config.tieWordEmbeddings && !hasLMHead ? embedding
            : try weight("lm_head.weight", [config.vocabularySize, hidden], .rows([vocabulary]))
    }

    public func makeKVCache(layout: PageLayout) -> KVCache {
        KVCache(layout: layout, layerCount: config.layerCount, attention: attention, backend: backend)
    }

    /// Bytes of the weights a decode step reads, as stored here: every layer's, the final norm and the LM head (of the
    /// embedding, only a row per token).
    public var decodeWeightBytes: Int {
        let perLayer = layers.reduce(0) { total, layer in
            let tensors = [layer.inputNorm, layer.qkv, layer.o, layer.postNorm, layer.gateUp, layer.down]
                + [layer.qkvBias, layer.queryKeyNorm?.query, layer.queryKeyNorm?.key, layer.attentionOutputNorm, layer.mlpOutputNorm]
                .compactMap { $0 }
            return total + tensors.reduce(0) { $0 + $1.elementCount * $1.dtype.byteSize }
        }
        return perLayer + (finalNorm.elementCount * finalNorm.dtype.byteSize) + lmHead.elementCount * lmHead.dtype.byteSize
    }

    /// Bytes of one token's keys and values over every layer (this rank's KV heads).
    public var kvBytesPerToken: Int { 2 * config.layerCount * attention.kvWidth * backend.kvCacheDType.byteSize }

    /// Bytes of one element of the backend's activations: the type norm gains are kept in on every
    /// backend (matrices may be narrower, as bfloat16 ones on the CPU).
    private var activationBytes: Int { finalNorm.dtype.byteSize }

    /// Device bytes a step of `rows` rows, `logitRows` of them sampled, allocates at its peak with LoRA of rank
    /// `loraRank`: `forward`'s buffers and the float32 logits sampling reads, doubled because pooled buffers are
    /// rounded up to powers of two. For sizing the KV cache around it.
    public func stepBytes(rows: Int, logitRows: Int, loraRank: Int) -> Int {
        let (hidden, intermediate) = (config.hiddenSize, shard.intermediateWidth(config))
        let rowElements = (config.sandwichNorms ? 5 : 4) * hidden + attention.qkvWidth + attention.queryWidth + 3 * intermediate
        let elements = rows * rowElements + logitRows * (hidden + config.vocabularySize)
        return 2 * (elements * activationBytes + 4 * (rows * loraRank + logitRows * config.vocabularySize))
    }

    /// Device bytes of one adapter of rank `rank` on every projection of every layer (this rank's part).
    public func adapterBytes(rank: Int) -> Int {
        let perLayer = Projection.of(config).reduce(0) { total, projection in
            let (outputs, inputs) = projection.weightShape(config)
            let held = shard.slice(projection, config).shape(of: [outputs, inputs])  // A [rank, in] and B [out, rank] follow it
            return total + rank * (held[0] + held[1])
        }
        return config.layerCount * perLayer * activationBytes
    }

    /// Runs one step (`backend.plan(batch)`) and returns the next-token logits of `batch.logitRows`:
    /// [logitRows.count, vocab], on the backend.
    public func forward(_ plan: StepPlan, cache: KVCache, adapters: ResidentAdapters) -> Tensor {
        let batch = plan.batch
        precondition(batch.rowCount > 0, "a step needs at least one row")
        let rows = batch.rowCount
        let (hidden, intermediate, eps) = (config.hiddenSize, shard.intermediateWidth(config), config.rmsNormEpsilon)
        let x = backend.zeros([rows, hidden])                       // residual stream
        let normed = backend.zeros([rows, hidden])
        let qkv = backend.zeros([rows, attention.qkvWidth])
        let attended = backend.zeros([rows, attention.queryWidth])
        let projected = backend.zeros([rows, hidden])               // o and down outputs, added to x by the next norm
        let gateUp = backend.zeros([rows, 2 * intermediate])
        let activated = backend.zeros([rows, intermediate])
        let v = backend.float32Zeros([rows, max(adapters.maxRank, 1)])  // LoRA shrink output
        let normedOutput = config.sandwichNorms ? backend.zeros([rows, hidden]) : nil

        // y = x·Wᵀ for every row, then each adapter's segment adds its low-rank delta (Punica's SGMV). The shrink is
        // issued first: it reads only x, so a backend may run it beside the base GEMM.
        func linear(_ input: Tensor, _ weight: Tensor, _ fused: FusedProjection, layer: Int, into output: Tensor) {
            let lora = adapters.projection(layer: layer, fused).flatMap { plan.runsLoRA($0) ? $0 : nil }
            if let lora { backend.loraShrink(x: input, projection: lora, plan: plan, v: v) }
            backend.matmul(x: input, weight: weight, out: output)
            if let lora { backend.loraExpand(v: v, projection: lora, plan: plan, y: output) }
        }

        // A sublayer's output as it joins the residual stream: RMS-normalized first where the layer has that norm.
        func sublayerOutput(_ y: Tensor, norm: Tensor?) -> Tensor {
            guard let norm, let normedOutput else { return y }
            backend.rmsNorm(x: y, weight: norm, epsilon: eps, out: normedOutput)
            return normedOutput
        }

        // A split model's ranks each hold part of the vocabulary (zeros for other tokens) and of o's and down's inputs:
        // an all-reduce adds their parts up.
        backend.embedding(table: embedding, firstToken: vocabulary.lowerBound, plan: plan, out: x)
        collectives?.allReduceSum(x)
        if let factor = config.embeddingScale { backend.scale(x, by: factor) }
        var added = projected  // what the next norm adds to x
        for (index, layer) in layers.enumerated() {
            let (kv, attention) = (cache.layers[index], layer.attention)
            if index == 0 {
                backend.rmsNorm(x: x, weight: layer.inputNorm, epsilon: eps, out: normed)
            } else {
                backend.addRMSNorm(residual: x, x: added, weight: layer.inputNorm, epsilon: eps, out: normed)
            }
            linear(normed, layer.qkv, .qkv, layer: index, into: qkv)
            if let bias = layer.qkvBias { backend.addBias(x: qkv, bias: bias) }
            if let norm = layer.queryKeyNorm {
                backend.headRMSNorm(qkv: qkv, shape: attention, queryWeight: norm.query, keyWeight: norm.key, epsilon: eps)
            }
            backend.ropeAppendKV(qkv: qkv, shape: attention, inverseFrequencies: layer.inverseFrequencies, scale: layer.ropeScale, cache: kv,
                                 layout: cache.layout, plan: plan)
            backend.attention(qkv: qkv, shape: attention, cache: kv, layout: cache.layout, plan: plan, out: attended)
            linear(attended, layer.o, .o, layer: index, into: projected)
            collectives?.allReduceSum(projected)
            added = sublayerOutput(projected, norm: layer.attentionOutputNorm)

            backend.addRMSNorm(residual: x, x: added, weight: layer.postNorm, epsilon: eps, out: normed)
            linear(normed, layer.gateUp, .gateUp, layer: index, into: gateUp)
            switch config.activation {
            case .silu: backend.siluMul(gateUp: gateUp, out: activated)
            case .geluTanh: backend.geluTanhMul(gateUp: gateUp, out: activated)
            }
            linear(activated, layer.down, .down, layer: index, into: projected)
            collectives?.allReduceSum(projected)
            added = sublayerOutput(projected, norm: layer.mlpOutputNorm)
        }
        backend.addRMSNorm(residual: x, x: added, weight: finalNorm, epsilon: eps, out: normed)

        // Only the rows that sample a token need the vocabulary projection, the largest GEMM of a decode step.
        let last = backend.zeros([batch.logitRows.count, hidden])
        backend.gatherLogitRows(x: normed, plan: plan, out: last)
        let scores = backend.zeros([batch.logitRows.count, vocabulary.count])
        backend.matmul(x: last, weight: lmHead, out: scores)
        if let cap = config.finalLogitSoftcap { backend.softcap(scores, cap: cap) }
        guard let collectives else { return scores }
        let logits = backend.zeros([batch.logitRows.count, config.vocabularySize])  // every rank's part side by side
        collectives.allGatherColumns(scores, widths: shard.vocabularyWidths(config.vocabularySize), into: logits)
        return logits
    }
}
