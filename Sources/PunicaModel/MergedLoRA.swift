import PunicaCompute

extension LlamaModel {
    /// This model with `adapter` merged into its weights: W' = W + scale·B·A for every projection the adapter
    /// targets, computed on the host in float32 and stored in the backend's weight type. A merged model serves only
    /// that adapter's requests, with no LoRA work in its steps: the usual way to deploy a single fine-tune, and one of
    /// the baselines of Punica's text-generation benchmark. Embeddings and norms are shared with this model; the
    /// projections are new copies.
    public func merging(_ adapter: LoRAAdapter) -> LlamaModel {
        precondition(shard == .whole, "only a whole model merges an adapter")
        var weights = ["model.embed_tokens.weight": embedding, "model.norm.weight": finalNorm, "lm_head.weight": lmHead]
        for (index, layer) in layers.enumerated() {
            weights["model.layers.\(index).input_layernorm.weight"] = layer.inputNorm
            let prefix = "model.layers.\(index)."
            weights[prefix + (config.sandwichNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight")] = layer.postNorm
            if let norm = layer.attentionOutputNorm { weights[prefix + "post_attention_layernorm.weight"] = norm }
            if let norm = layer.mlpOutputNorm { weights[prefix + "post_feedforward_layernorm.weight"] = norm }
            if let norm = layer.queryKeyNorm {
                weights["model.layers.\(index).self_attn.q_norm.weight"] = norm.query
                weights["model.layers.\(index).self_attn.k_norm.weight"] = norm.key
            }
            if let bias = layer.qkvBias {  // fused [q | k | v], split again by part
                let values = backend.toHost(bias)
                var offset = 0
                for part in FusedProjection.qkv.parts(config) {
                    let outputs = part.weightShape(config).outputs
                    weights[part.checkpointName(layer: index) + ".bias"] = values[offset ..< offset + outputs]
                        .withUnsafeBytes { backend.weight(from: $0.baseAddress!, dtype: .float32, shape: [outputs]) }
                    offset += outputs
                }
            }
            for fused in FusedProjection.allCases {
                let base = layer.weight(fused)
                var merged = backend.toHost(base)  // [fused outputs, in]
                if let lora = adapter.weights[index][fused.rawValue] {
                    addDelta(lora, to: &merged, inputs: base.shape[1])
                }
                // The binding initializer takes each part by its checkpoint name and fuses them again.
                var offset = 0
                for part in fused.parts(config) {
                    let (outputs, inputs) = part.weightShape(config)
                    weights[part.checkpointName(layer: index) + ".weight"] = merged[offset * inputs ..< (offset + outputs) * inputs]
                        .withUnsafeBytes { backend.weight(from: $0.baseAddress!, dtype: .float32, shape: [outputs, inputs]) }
                    offset += outputs
                }
            }
        }
        return try! LlamaModel(config: config, backend: backend, hasLMHead: lmHead !== embedding) { name, _, _ in weights[name]! }
    }

    /// weight[piece.outputOffset + o, :] += Σₖ B[o, k] · A[piece.rankOffset + k, :] for each piece (B has the scale
    /// folded in): row by row, so the inner loop is a vectorizable axpy over the input width.
    private func addDelta(_ lora: LoRAWeights, to weight: inout [Float], inputs: Int) {
        let a = backend.toHost(lora.a)  // [total rank, in]
        weight.withUnsafeMutableBufferPointer { weight in
            a.withUnsafeBufferPointer { a in
                for piece in lora.pieces {
                    let b = backend.toHost(piece.b)  // [out, r]
                    for output in 0..<piece.outputWidth {
                        let row = (piece.outputOffset + output) * inputs
                        for k in 0..<piece.rank {
                            let coefficient = b[output * piece.rank + k], source = (piece.rankOffset + k) * inputs
                            for i in 0..<inputs { weight[row + i] += coefficient * a[source + i] }
                        }
                    }
                }
            }
        }
    }
}

private extension LayerWeights {
    func weight(_ fused: FusedProjection) -> Tensor {
        switch fused {
        case .qkv: qkv
        case .o: o
        case .gateUp: gateUp
        case .down: down
        }
    }
}
