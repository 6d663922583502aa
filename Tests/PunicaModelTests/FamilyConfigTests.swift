import Foundation
import PunicaModel
import Testing

/// What each family's config.json fields turn into (layer windows, biases, norms), and the fields refused.
@Suite struct FamilyConfigTests {
    static func parse(_ fields: [String: Any]) throws -> ModelConfig {
        var config: [String: Any] = ["hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                                     "num_key_value_heads": 2, "vocab_size": 100]
        config.merge(fields) { $1 }
        return try ModelConfig.parse(JSONSerialization.data(withJSONObject: config), path: "config.json")
    }

    @Test func qwen2WindowsFollowUseSlidingWindowAndMaxWindowLayers() throws {
        let off = try Self.parse(["architectures": ["Qwen2ForCausalLM"], "sliding_window": 32, "max_window_layers": 2])
        #expect(off.slidingWindows == [nil, nil, nil, nil] && off.qkvBias && !off.queryKeyNorm)
        let on = try Self.parse(["architectures": ["Qwen2ForCausalLM"], "use_sliding_window": true, "sliding_window": 32,
                                 "max_window_layers": 2])
        #expect(on.slidingWindows == [nil, nil, 32, 32])
        #expect(on.attention(layer: 3).slidingWindow == 32 && on.attention(layer: 1).slidingWindow == nil)
        let typed = try Self.parse(["architectures": ["Qwen2ForCausalLM"], "use_sliding_window": true, "sliding_window": 8,
                                    "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]])
        #expect(typed.slidingWindows == [8, nil, 8, nil])
        // Qwen2's biases do not depend on attention_bias (transformers writes false).
        #expect(try Self.parse(["architectures": ["Qwen2ForCausalLM"], "attention_bias": false]).qkvBias)
    }

    @Test func qwen3HasQueryKeyNormsAndItsOwnHeadDim() throws {
        let config = try Self.parse(["model_type": "qwen3", "head_dim": 32])
        #expect(config.architecture == .qwen3 && config.queryKeyNorm && !config.qkvBias)
        #expect(config.attention.queryWidth == 128 && config.hiddenSize == 64)
        #expect(config.slidingWindows == [nil, nil, nil, nil])
    }

    @Test func mistralWindowsEveryLayerAndLlamaNone() throws {
        #expect(try Self.parse(["architectures": ["MistralForCausalLM"]]).slidingWindows == [4096, 4096, 4096, 4096])
        #expect(try Self.parse(["architectures": ["MistralForCausalLM"], "sliding_window": NSNull()]).slidingWindows == [nil, nil, nil, nil])
        #expect(try Self.parse(["architectures": ["LlamaForCausalLM"], "sliding_window": 16]).slidingWindows == [nil, nil, nil, nil])
    }

    @Test func phi3IsFusedInItsCheckpointAndWindowsEveryLayer() throws {
        let config = try Self.parse(["architectures": ["Phi3ForCausalLM"], "sliding_window": 2047])
        #expect(config.fusedCheckpoint && config.slidingWindows == [2047, 2047, 2047, 2047])
        #expect(Projection.of(config) == [.qkv, .o, .gateUp, .down])
        #expect(Projection.qkv.weightShape(config) == (config.attention.qkvWidth, 64))
        #expect(try Self.parse(["architectures": ["Phi3ForCausalLM"]]).slidingWindows == [nil, nil, nil, nil])
    }

    @Test func gemma2DefaultsAndFields() throws {
        let defaults = try Self.parse(["architectures": ["Gemma2ForCausalLM"]])
        #expect(defaults.slidingWindows == [4096, nil, 4096, nil] && defaults.tieWordEmbeddings && defaults.attention.headDim == 256)
        #expect(defaults.attentionSoftcap == 50 && defaults.finalLogitSoftcap == 30 && defaults.attentionScale == 1 / 16)
        #expect(defaults.activation == .geluTanh && defaults.embeddingScale == 8 && defaults.normWeightsAddOne && defaults.sandwichNorms)
        let layer = defaults.attention(layer: 0)
        #expect(layer.scale == 1 / 16 && layer.softcap == 50 && layer.slidingWindow == 4096)
        let set = try Self.parse(["model_type": "gemma2", "head_dim": 16, "query_pre_attn_scalar": 64, "sliding_window": 8,
                                  "attn_logit_softcapping": NSNull(), "final_logit_softcapping": NSNull(),
                                  "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
                                  "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh"])
        #expect(set.slidingWindows == [nil, 8, 8, nil] && set.attentionScale == 1 / 8)
        #expect(set.attentionSoftcap == nil && set.finalLogitSoftcap == nil && set.attention(layer: 1).softcap == nil)
        let llama = try Self.parse(["architectures": ["LlamaForCausalLM"]])
        #expect(llama.attention(layer: 0).scale == 1 / 4 && llama.attention(layer: 0).softcap == nil && llama.embeddingScale == nil)
    }

    /// Gemma 3: RoPE per layer type from transformers 5's rope_parameters or the Hub's rope_theta + rope_local_base_freq.
    @Test func gemma3RoPEPerLayerTypeAndPattern() throws {
        let hub = try Self.parse(["architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 7, "rope_theta": 1e6,
                                  "rope_local_base_freq": 1e4, "rope_scaling": ["rope_type": "linear", "factor": 8.0]])
        #expect(hub.slidingWindows == [4096, 4096, 4096, 4096, 4096, nil, 4096] && hub.queryKeyNorm && hub.attentionSoftcap == nil)
        #expect(hub.rope(layer: 5) == RoPE(theta: 1e6, scaling: .linear(factor: 8)) && hub.rope(layer: 0) == RoPE(theta: 1e4, scaling: .none))
        let nested = try Self.parse(["model_type": "gemma3_text", "sliding_window_pattern": 2, "rope_parameters": [
            "full_attention": ["rope_type": "default", "rope_theta": 5e5], "sliding_attention": ["rope_type": "default", "rope_theta": 2e4]]])
        #expect(nested.slidingWindows == [4096, nil, 4096, nil])
        #expect(nested.rope(layer: 1).theta == 5e5 && nested.rope(layer: 2).theta == 2e4 && nested.finalLogitSoftcap == nil)
        // Other families have one RoPE for every layer.
        let mistral = try Self.parse(["architectures": ["MistralForCausalLM"], "rope_theta": 1e6])
        #expect(mistral.slidingRoPE == nil && mistral.rope(layer: 0) == mistral.rope)
    }

    /// Phi-3 128k / Phi-3.5's LongRoPE: one factor set for every position, long when the model serves more than its
    /// original context (see `ModelConfig`), cos and sin scaled by the attention factor; "su" is the old name.
    @Test func phi3LongRoPEPicksOneFactorSet() throws {
        let short = (0..<8).map { 1 + Double($0) / 10 }, long = (0..<8).map { 1 + Double($0) }
        func parse(_ fields: [String: Any]) throws -> RoPE {
            try Self.parse(["architectures": ["Phi3ForCausalLM"], "rope_theta": 1e4].merging(fields) { $1 }).rope
        }
        let scaling: [String: Any] = ["type": "longrope", "short_factor": short, "long_factor": long]
        let extended = try parse(["max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "rope_scaling": scaling])
        let attentionFactor = (1 + log(32.0) / log(4096.0)).squareRoot()
        #expect(extended.scaling == .longrope(factors: long, attentionFactor: attentionFactor))
        #expect(extended.attentionScaling == Float(attentionFactor) && extended.attentionScaling > 1)
        #expect(extended.inverseFrequencies(headDim: 16) == (0..<8).map { Float(1 / pow(1e4, Double(2 * $0) / 16) / long[$0]) })
        // Serving no more than the original context: the short factors, attention factor 1 (factor 4096 / 4096).
        let original = try parse(["max_position_embeddings": 4096, "original_max_position_embeddings": 4096, "rope_scaling": scaling])
        #expect(original.scaling == .longrope(factors: short, attentionFactor: 1) && original.attentionScaling == 1)
        #expect(try parse(["max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
                           "rope_scaling": scaling.merging(["type": "su"]) { $1 }]) == extended)
        // As in transformers, Phi-3's top-level original_max_position_embeddings (4096 when absent) overrides
        // rope_scaling's; explicit factor and attention_factor are used as given.
        let phi3Default = try parse(["max_position_embeddings": 8192,
                                     "rope_scaling": scaling.merging(["original_max_position_embeddings": 8192]) { $1 }])
        #expect(phi3Default.scaling == .longrope(factors: long, attentionFactor: (1 + log(2.0) / log(4096.0)).squareRoot()))
        let explicit = try parse(["max_position_embeddings": 8192, "original_max_position_embeddings": 4096,
                                  "rope_scaling": scaling.merging(["factor": 16.0, "attention_factor": 1.5]) { $1 }])
        #expect(explicit.scaling == .longrope(factors: long, attentionFactor: 1.5))
        // Other architectures read rope_parameters' original_max_position_embeddings (transformers 5), else serve no more.
        let llama = try Self.parse(["architectures": ["LlamaForCausalLM"], "max_position_embeddings": 8192, "rope_parameters": [
            "rope_type": "longrope", "rope_theta": 1e4, "short_factor": short, "long_factor": long, "original_max_position_embeddings": 8192]])
        #expect(llama.rope.scaling == .longrope(factors: short, attentionFactor: 1))
    }

    @Test func refusedFieldsAreNamed() {
        func message(_ fields: [String: Any]) -> String {
            do {
                _ = try Self.parse(fields)
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        let unknownType = message(["architectures": ["Qwen2ForCausalLM"], "layer_types": ["full_attention", "chunked_attention", "full_attention", "full_attention"]])
        #expect(unknownType.contains("layer_types") && unknownType.contains("chunked_attention"))
        let count = message(["architectures": ["Qwen3ForCausalLM"], "layer_types": ["full_attention"]])
        #expect(count.contains("layer_types") && count.contains("1 entries"))
        let bias = message(["architectures": ["Qwen3ForCausalLM"], "attention_bias": true])
        #expect(bias.contains("attention_bias"))
        let partial = message(["architectures": ["Phi3ForCausalLM"], "partial_rotary_factor": 0.75])
        #expect(partial.contains("partial_rotary_factor") && partial.contains("0.75"))
        let longrope = message(["architectures": ["Phi3ForCausalLM"],
                                "rope_scaling": ["type": "longrope", "short_factor": [1.0], "long_factor": [1.0]]])
        #expect(longrope.contains("rope_scaling.short_factor") && longrope.contains("head_dim / 2 is 8"))
        let activation = message(["architectures": ["Gemma2ForCausalLM"], "hidden_activation": "gelu"])
        #expect(activation.contains("hidden_activation") && activation.contains("gelu_pytorch_tanh"))
        let cap = message(["architectures": ["Gemma2ForCausalLM"], "attn_logit_softcapping": -1])
        #expect(cap.contains("attn_logit_softcapping"))
        let bidirectional = message(["architectures": ["Gemma3ForCausalLM"], "use_bidirectional_attention": true])
        #expect(bidirectional.contains("use_bidirectional_attention"))
        let perType = message(["architectures": ["LlamaForCausalLM"], "rope_parameters": ["full_attention": ["rope_type": "default"]]])
        #expect(perType.contains("rope_parameters") && perType.contains("Gemma3ForCausalLM"))
        let localTheta = message(["model_type": "gemma3_text", "rope_local_base_freq": 0])
        #expect(localTheta.contains("rope_local_base_freq"))
    }
}
