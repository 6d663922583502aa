#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute

/// Rotary position embedding: base frequency and the scaling variants this project implements.
public struct RoPE: Sendable, Hashable {
    public enum Scaling: Sendable, Hashable {
        case none
        /// Positions divided by `factor`.
        case linear(factor: Double)
        /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
        case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalContext: Double)
        /// LongRoPE (Phi-3 128k, Phi-3.5): each frequency divided by its own factor, cos and sin multiplied by
        /// `attentionFactor`. `factors` is the one set the model runs with (`ModelConfig` picks short or long).
        case longrope(factors: [Double], attentionFactor: Double)
    }

    public let theta: Double
    public let scaling: Scaling

    public init(theta: Double, scaling: Scaling) {
        self.theta = theta
        self.scaling = scaling
    }

    /// inverse frequency of each rotated pair: [headDim / 2], as HF's `rope_init_fn` computes them.
    public func inverseFrequencies(headDim: Int) -> [Float] {
        (0..<headDim / 2).map { i in
            let exponent = Double(2 * i) / Double(headDim)
            let base: Double = 1 / pow(theta, exponent)
            switch scaling {
            case .none:
                return Float(base)
            case let .linear(factor):
                return Float(base / factor)
            case let .llama3(factor, low, high, originalContext):
                let wavelength = 2 * Double.pi / base
                if wavelength < originalContext / high { return Float(base) }
                if wavelength > originalContext / low { return Float(base / factor) }
                let smooth = (originalContext / wavelength - low) / (high - low)
                return Float((1 - smooth) * base / factor + smooth * base)
            case let .longrope(factors, _):
                return Float(base / factors[i])
            }
        }
    }

    /// What cos and sin of every angle are multiplied by (transformers' `attention_scaling`): LongRoPE's
    /// attention factor, 1 for the other scalings.
    public var attentionScaling: Float {
        guard case let .longrope(_, attentionFactor) = scaling else { return 1 }
        return Float(attentionFactor)
    }
}

/// What the engine needs from `config.json` of a Llama-family checkpoint (`Architecture`).
public struct ModelConfig: Sendable {
    public enum Architecture: String, Sendable, CaseIterable {
        case llama = "LlamaForCausalLM"
        case mistral = "MistralForCausalLM"
        case qwen2 = "Qwen2ForCausalLM"
        case qwen3 = "Qwen3ForCausalLM"
        case phi3 = "Phi3ForCausalLM"
        case gemma2 = "Gemma2ForCausalLM"
        case gemma3 = "Gemma3ForCausalLM"
    }

    /// The gate's activation in the MLP: SwiGLU, or Gemma's GeGLU with tanh-approximated GELU.
    public enum Activation: Sendable { case silu, geluTanh }

    public let architecture: Architecture
    public let hiddenSize: Int
    public let intermediateSize: Int
    public let layerCount: Int
    /// The head layout every layer shares (no sliding window: that is per layer, `attention(layer:)`).
    public let attention: AttentionShape
    /// [layerCount]: keys further back than this many positions are masked in that layer; nil attends to all.
    public let slidingWindows: [Int?]
    /// q, k and v projections have biases (Qwen2).
    public let qkvBias: Bool
    /// q and k heads are RMS-normalized over the head dim before RoPE, with weights of their own (Qwen3).
    public let queryKeyNorm: Bool
    /// The checkpoint stores q|k|v as `qkv_proj` and gate|up as `gate_up_proj` (Phi-3).
    public let fusedCheckpoint: Bool
    public let activation: Activation
    /// Embeddings are multiplied by this (Gemma: √hidden); nil leaves them as they are.
    public let embeddingScale: Float?
    /// RMSNorm weights are stored as w and applied as (1 + w) (Gemma); folded into the weights when they are read.
    public let normWeightsAddOne: Bool
    /// Attention and MLP outputs are RMS-normalized before they join the residual stream (post_attention_layernorm,
    /// post_feedforward_layernorm), and pre_feedforward_layernorm precedes the MLP (Gemma 2).
    public let sandwichNorms: Bool
    /// Attention scores are q·k times this (Gemma 2: 1/√query_pre_attn_scalar); nil is 1/√head_dim.
    public let attentionScale: Float?
    /// Attention scores and final logits become cap · tanh(x / cap) (Gemma 2); nil where not capped.
    public let attentionSoftcap: Float?
    public let finalLogitSoftcap: Float?
    public let vocabularySize: Int
    public let rmsNormEpsilon: Float
    public let rope: RoPE
    /// RoPE of the sliding-window layers where it differs from `rope` (Gemma 3's local base); nil where it does not.
    public let slidingRoPE: RoPE?
    public let maxPositionEmbeddings: Int
    public let tieWordEmbeddings: Bool
    public let bosTokenID: Int?
    public let eosTokenIDs: [Int]

    /// A Llama configuration by its shape (benchmarks of random models): rope θ 10000, no scaling, 2048 positions.
    public static func llama(hiddenSize: Int, intermediateSize: Int, layers: Int, heads: Int, kvHeads: Int,
                             vocabularySize: Int, tieWordEmbeddings: Bool) -> ModelConfig {
        let raw = RawConfig(architectures: ["LlamaForCausalLM"], hidden_size: hiddenSize, intermediate_size: intermediateSize,
                            num_hidden_layers: layers, num_attention_heads: heads, num_key_value_heads: kvHeads,
                            vocab_size: vocabularySize, rms_norm_eps: 1e-5, max_position_embeddings: 2048,
                            tie_word_embeddings: tieWordEmbeddings)
        return try! ModelConfig(raw, slidingWindow: nil, path: "(built in)")
    }

    /// The head layout of one layer, with its sliding window.
    public func attention(layer: Int) -> AttentionShape {
        AttentionShape(queryHeads: attention.queryHeads, kvHeads: attention.kvHeads, headDim: attention.headDim,
                       slidingWindow: slidingWindows[layer], scale: attentionScale, softcap: attentionSoftcap)
    }

    /// Parameters of the base model (embedding and head counted once when tied).
    public var parameterCount: Int {
        let attention = self.attention
        let perLayer = hiddenSize * (attention.queryWidth + 2 * attention.kvWidth) + attention.queryWidth * hiddenSize
            + 3 * hiddenSize * intermediateSize + 2 * hiddenSize
            + (qkvBias ? attention.qkvWidth : 0) + (queryKeyNorm ? 2 * attention.headDim : 0) + (sandwichNorms ? 2 * hiddenSize : 0)
        return layerCount * perLayer + vocabularySize * hiddenSize * (tieWordEmbeddings ? 1 : 2) + hiddenSize
    }

    /// The largest size or count config.json may give (widths, heads, head_dim, vocabulary): products of two stay far
    /// from overflow, and no real model comes near it (Llama 3 405B: hidden 16 384, vocabulary 128 256).
    public static let maxSize = 1 << 20
    /// The most decoder layers (Llama 3 405B has 126).
    public static let maxLayers = 4096
    /// The most positions `max_position_embeddings` may give.
    public static let maxPositions = 1 << 30

    public static func load(directory: String) throws -> ModelConfig {
        let path = directory + "/config.json"
        return try parse(readRegularFile(path, expected: "a JSON file"), path: path)
    }

    /// config.json's contents; `path` names the file in errors.
    public static func parse(_ json: Data, path: String) throws -> ModelConfig {
        let file = try decodeJSON(ConfigFile.self, from: json, path: path)
        return try ModelConfig(file.raw, slidingWindow: file.slidingWindow, softcaps: file.softcaps, ropeByLayerType: file.ropeByLayerType,
                               path: path)
    }

    /// Sliding windows per layer. Mistral: every layer, 4096 when the key is absent, none when it is null. Phi-3:
    /// every layer when `sliding_window` is set. Gemma: the "sliding_attention" layers of `layer_types`, else all but
    /// every second (Gemma 2) or sixth (Gemma 3, `sliding_window_pattern`) layer. Qwen2 and Qwen3 as their configs define it: a window only with
    /// `use_sliding_window`, on the layers `layer_types` marks "sliding_attention", or when that is absent, on
    /// layers ≥ `max_window_layers` (default 28).
    private static func slidingWindows(_ raw: RawConfig, architecture: Architecture, slidingWindow: Nullable<Int>?,
                                       path: String) throws -> [Int?] {
        let layers = raw.num_hidden_layers
        switch architecture {
        case .llama:
            return Array(repeating: nil, count: layers)
        case .mistral:
            return Array(repeating: (slidingWindow ?? .value(4096)).value, count: layers)
        case .phi3:
            return Array(repeating: slidingWindow?.value, count: layers)
        case .gemma2, .gemma3:
            // Without layer_types: every `sliding_window_pattern`-th layer is global (Gemma 2: every other, Gemma 3: 6).
            let window = (slidingWindow ?? .value(4096)).value
            let pattern = architecture == .gemma2 ? 2 : raw.sliding_window_pattern ?? 6
            guard pattern >= 1 else {
                throw ModelError.invalidValue(path: path, field: "sliding_window_pattern", reason: "must be at least 1, found \(pattern)")
            }
            return try (raw.layer_types ?? (0..<layers).map { ($0 + 1) % pattern != 0 ? "sliding_attention" : "full_attention" })
                .layerWindows(window, layers: layers, path: path)
        case .qwen2, .qwen3:
            let window = raw.use_sliding_window == true ? (slidingWindow ?? .value(4096)).value : nil
            guard let types = raw.layer_types else {
                let first = raw.max_window_layers ?? 28
                return (0..<layers).map { $0 >= first ? window : nil }
            }
            return try types.layerWindows(window, layers: layers, path: path)
        }
    }

    init(_ raw: RawConfig, slidingWindow: Nullable<Int>?, softcaps: (attention: Nullable<Double>?, final: Nullable<Double>?) = (nil, nil),
         ropeByLayerType: [String: RawConfig.RopeParameters]? = nil, path: String) throws {
        guard let name = raw.architectures?.first ?? raw.model_type.flatMap({ Self.architectureOfModelType[$0] }) else {
            throw ModelError.invalidValue(path: path, field: "architectures", reason: "is missing (and model_type names no supported architecture)")
        }
        guard let architecture = Architecture(rawValue: name) else {
            throw ModelError.unsupported(path: path, field: "architectures", value: "\"\(name)\"",
                                         supported: Architecture.allCases.map(\.rawValue).joined(separator: ", "))
        }
        // Gemma names it hidden_activation (older configs also write hidden_act).
        let gemma = architecture == .gemma2 || architecture == .gemma3
        let activationField = gemma && raw.hidden_activation != nil ? "hidden_activation" : "hidden_act"
        let expectedActivation = gemma ? "gelu_pytorch_tanh" : "silu"
        if let activation = gemma ? raw.hidden_activation ?? raw.hidden_act : raw.hidden_act, activation != expectedActivation {
            throw ModelError.unsupported(path: path, field: activationField, value: "\"\(activation)\"", supported: expectedActivation)
        }
        // Qwen2's q/k/v biases are fixed by its architecture, whatever attention_bias says.
        if (raw.attention_bias == true && architecture != .qwen2) || raw.mlp_bias == true {
            throw ModelError.unsupported(path: path, field: raw.attention_bias == true ? "attention_bias" : "mlp_bias",
                                         value: "true", supported: "false")
        }
        func invalid(_ field: String, _ reason: String) -> ModelError { .invalidValue(path: path, field: field, reason: reason) }
        for (field, value, limit) in [("hidden_size", raw.hidden_size, Self.maxSize), ("intermediate_size", raw.intermediate_size, Self.maxSize),
                                      ("num_hidden_layers", raw.num_hidden_layers, Self.maxLayers),
                                      ("num_attention_heads", raw.num_attention_heads, Self.maxSize), ("vocab_size", raw.vocab_size, Self.maxSize),
                                      ("max_position_embeddings", raw.max_position_embeddings ?? 4096, Self.maxPositions)]
            where !(1...limit).contains(value) {
            throw invalid(field, "must be in 1...\(limit), found \(value)")
        }
        let kvHeads = raw.num_key_value_heads ?? raw.num_attention_heads
        guard kvHeads > 0, raw.num_attention_heads % kvHeads == 0 else {
            throw invalid("num_key_value_heads", "(\(kvHeads)) must divide num_attention_heads (\(raw.num_attention_heads))")
        }
        if raw.head_dim == nil, !gemma, raw.hidden_size % raw.num_attention_heads != 0 {
            throw invalid("hidden_size", "(\(raw.hidden_size)) must be a multiple of num_attention_heads (\(raw.num_attention_heads)) when head_dim is not given")
        }
        let headDim = raw.head_dim ?? (gemma ? 256 : raw.hidden_size / raw.num_attention_heads)
        guard (1...Self.maxSize).contains(headDim), headDim % 2 == 0 else {
            throw invalid("head_dim", "must be an even number in 2...\(Self.maxSize), found \(headDim)")
        }
        // Both factors are at most 2²⁰, so the product cannot overflow.
        guard raw.num_attention_heads * headDim <= Self.maxSize else {
            throw invalid("head_dim", "× num_attention_heads (\(headDim) × \(raw.num_attention_heads)) must be at most \(Self.maxSize)")
        }
        let partialRotary = raw.rope_parameters?.partial_rotary_factor ?? raw.partial_rotary_factor ?? 1
        guard partialRotary == 1 else {
            throw ModelError.unsupported(path: path, field: raw.rope_parameters?.partial_rotary_factor != nil
                                         ? "rope_parameters.partial_rotary_factor" : "partial_rotary_factor",
                                         value: "\(partialRotary)", supported: "1 (RoPE over the whole head)")
        }
        let epsilon = Float(raw.rms_norm_eps ?? 1e-6)
        guard epsilon > 0, epsilon.isFinite else {
            throw invalid("rms_norm_eps", "must be a positive float32, found \(raw.rms_norm_eps ?? 1e-6)")
        }
        if let window = slidingWindow?.value, window < 1 {
            throw invalid("sliding_window", "must be at least 1 (or null for none), found \(window)")
        }
        for (field, id) in [("bos_token_id", raw.bos_token_id)] + (raw.eos_token_id?.values ?? []).map({ ("eos_token_id", $0) }) {
            if let id, !(0..<raw.vocab_size).contains(id) {
                throw invalid(field, "\(id) is outside the vocabulary (0..<\(raw.vocab_size))")
            }
        }
        self.architecture = architecture
        hiddenSize = raw.hidden_size
        intermediateSize = raw.intermediate_size
        layerCount = raw.num_hidden_layers
        attention = AttentionShape(queryHeads: raw.num_attention_heads, kvHeads: kvHeads, headDim: headDim)
        slidingWindows = try Self.slidingWindows(raw, architecture: architecture, slidingWindow: slidingWindow, path: path)
        qkvBias = architecture == .qwen2
        queryKeyNorm = architecture == .qwen3 || architecture == .gemma3
        fusedCheckpoint = architecture == .phi3
        activation = gemma ? .geluTanh : .silu
        embeddingScale = gemma ? Float(raw.hidden_size).squareRoot() : nil
        normWeightsAddOne = gemma
        sandwichNorms = gemma
        func positive(_ value: Double?, _ field: String) throws -> Float? {
            guard let value else { return nil }
            guard value > 0, value.isFinite, Float(value).isNormal else { throw invalid(field, "must be a positive number, found \(value)") }
            return Float(value)
        }
        let scalar = gemma ? try positive(raw.query_pre_attn_scalar ?? 256, "query_pre_attn_scalar") : nil
        attentionScale = scalar.map { 1 / $0.squareRoot() }
        // Gemma 2's defaults where a key is absent (Gemma 3 has none); null turns a cap off.
        let defaultCaps: (Double?, Double?) = architecture == .gemma2 ? (50, 30) : (nil, nil)
        attentionSoftcap = gemma ? try positive(softcaps.attention.map(\.value) ?? defaultCaps.0, "attn_logit_softcapping") : nil
        finalLogitSoftcap = gemma ? try positive(softcaps.final.map(\.value) ?? defaultCaps.1, "final_logit_softcapping") : nil
        if raw.use_bidirectional_attention == true {
            throw ModelError.unsupported(path: path, field: "use_bidirectional_attention", value: "true", supported: "false (causal)")
        }
        vocabularySize = raw.vocab_size
        rmsNormEpsilon = epsilon
        maxPositionEmbeddings = raw.max_position_embeddings ?? 4096
        tieWordEmbeddings = raw.tie_word_embeddings ?? gemma
        bosTokenID = raw.bos_token_id
        eosTokenIDs = raw.eos_token_id?.values ?? []
        if let ropeByLayerType, architecture != .gemma3 {
            throw ModelError.unsupported(path: path, field: "rope_parameters", value: "per layer type (\(ropeByLayerType.keys.sorted()))",
                                         supported: "one set of parameters (per layer type only for Gemma3ForCausalLM)")
        }
        // Where a LongRoPE reads its pretraining context: transformers lets a top-level original_max_position_embeddings
        // override rope_scaling's, and Phi3Config always has one (4096 by default).
        let context = RoPEContext(headDim: headDim, maxPositions: raw.max_position_embeddings ?? 4096,
                                  originalMaxPositions: raw.original_max_position_embeddings ?? (architecture == .phi3 ? 4096 : nil))
        let thetaField: String
        switch (architecture, ropeByLayerType) {
        case (.gemma3, let byType?):
            // transformers 5: {"full_attention": {...}, "sliding_attention": {...}}.
            rope = try Self.rope(byType["full_attention"], field: "rope_parameters.full_attention", theta: raw.rope_theta ?? 1e6,
                                 context: context, path: path)
            slidingRoPE = try Self.rope(byType["sliding_attention"], field: "rope_parameters.sliding_attention",
                                        theta: raw.rope_local_base_freq ?? 1e4, context: context, path: path)
            thetaField = "rope_parameters.full_attention.rope_theta"
        case (.gemma3, nil):
            // Hub configs: rope_theta and rope_scaling for the global layers, rope_local_base_freq for the sliding ones.
            rope = try Self.rope(raw.rope_scaling, field: "rope_scaling", theta: raw.rope_theta ?? 1e6, context: context, path: path)
            slidingRoPE = RoPE(theta: raw.rope_local_base_freq ?? 1e4, scaling: .none)
            thetaField = "rope_theta"
        default:
            let field = raw.rope_parameters != nil ? "rope_parameters" : "rope_scaling"
            rope = try Self.rope(raw.rope_parameters ?? raw.rope_scaling, field: field, theta: raw.rope_theta ?? 10000, context: context,
                                 path: path)
            slidingRoPE = nil
            thetaField = raw.rope_parameters != nil ? "rope_parameters.rope_theta" : "rope_theta"
        }
        // A tiny θ makes 1/θ^(2i/d) overflow float32; NaN or ∞ there reaches every logit.
        for (field, rope) in [(thetaField, rope)] + (slidingRoPE.map { [("rope_local_base_freq", $0)] } ?? [])
            where !(rope.theta > 0 && rope.theta.isFinite && rope.inverseFrequencies(headDim: headDim).allSatisfy(\.isFinite)) {
            throw invalid(field, "(\(rope.theta)) gives non-finite rotary frequencies for head_dim \(headDim)")
        }
    }

    /// The RoPE of one layer: `slidingRoPE` on sliding-window layers where there is one.
    public func rope(layer: Int) -> RoPE {
        slidingWindows[layer] != nil ? slidingRoPE ?? rope : rope
    }

    private static let architectureOfModelType = ["llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                                  "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM",
                                                  "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"]

    /// What a RoPE needs from the rest of config.json: the head dim (LongRoPE has a factor per rotated pair), the
    /// context served and the pretraining context that overrides the RoPE parameters' own.
    private struct RoPEContext {
        let headDim: Int
        let maxPositions: Int
        let originalMaxPositions: Int?
    }

    /// One RoPE from `rope_scaling` (classic configs, with `theta` from rope_theta) or `rope_parameters`
    /// (transformers 5), `field` naming it in errors.
    ///
    /// LongRoPE has two factor sets; transformers picks per forward pass, `long_factor` when the sequence is longer
    /// than `original_max_position_embeddings`, for every position. A serving engine cannot follow it: the keys in the
    /// KV cache were rotated with the set of the step that wrote them, so switching mid-sequence would leave them
    /// wrong (re-rotating them all is a full prefill). As vLLM does, one set serves every position of every
    /// sequence: `long_factor` when the model serves contexts beyond `original_max_position_embeddings`
    /// (`max_position_embeddings` is larger), `short_factor` otherwise. transformers gives the same logits whenever
    /// its pick is the same: sequences longer than the original context in a long-context model, or any sequence in
    /// a model that does not extend it. (For a long-context model, sequences within the original context run with
    /// the long factors here and the short ones in transformers.)
    private static func rope(_ parameters: RawConfig.RopeParameters?, field: String, theta fallback: Double, context: RoPEContext,
                             path: String) throws -> RoPE {
        let theta = parameters?.rope_theta ?? fallback
        let type = parameters?.rope_type ?? parameters?.type ?? "default"
        guard theta > 0, theta.isFinite else {
            throw ModelError.invalidValue(path: path, field: parameters?.rope_theta != nil ? "\(field).rope_theta" : "rope_theta",
                                          reason: "must be a positive number, found \(theta)")
        }
        func required(_ value: Double?, _ name: String) throws -> Double {
            guard let value, value > 0, value.isFinite else {
                throw ModelError.invalidValue(path: path, field: "\(field).\(name)", reason: "must be a positive number for rope_type \"\(type)\"")
            }
            return value
        }
        switch type {
        case "default":
            return RoPE(theta: theta, scaling: .none)
        case "linear":
            return RoPE(theta: theta, scaling: .linear(factor: try required(parameters?.factor, "factor")))
        case "llama3":
            // The ramp between them divides by high − low.
            if let low = parameters?.low_freq_factor, let high = parameters?.high_freq_factor, high <= low {
                throw ModelError.invalidValue(path: path, field: "\(field).high_freq_factor",
                                              reason: "(\(high)) must be greater than low_freq_factor (\(low))")
            }
            return RoPE(theta: theta, scaling: .llama3(
                factor: try required(parameters?.factor, "factor"),
                lowFrequencyFactor: try required(parameters?.low_freq_factor, "low_freq_factor"),
                highFrequencyFactor: try required(parameters?.high_freq_factor, "high_freq_factor"),
                originalContext: try required(parameters?.original_max_position_embeddings.map(Double.init), "original_max_position_embeddings")))
        case "longrope", "su":  // "su": its name in early Phi-3 configs
            func factors(_ values: [Double]?, _ name: String) throws -> [Double] {
                func invalid(_ reason: String) -> ModelError { .invalidValue(path: path, field: "\(field).\(name)", reason: reason) }
                let pairs = context.headDim / 2
                guard let values else { throw invalid("is missing: rope_type \"\(type)\" needs one factor per rotated pair (head_dim / 2 = \(pairs))") }
                guard values.count == pairs else { throw invalid("holds \(values.count) factors, but head_dim / 2 is \(pairs) (one per rotated pair)") }
                guard values.allSatisfy({ $0 > 0 && $0.isFinite }) else { throw invalid("must hold positive numbers") }
                return values
            }
            let (short, long) = (try factors(parameters?.short_factor, "short_factor"), try factors(parameters?.long_factor, "long_factor"))
            let originalField = context.originalMaxPositions != nil ? "original_max_position_embeddings" : "\(field).original_max_position_embeddings"
            let original = context.originalMaxPositions ?? parameters?.original_max_position_embeddings ?? context.maxPositions
            // log(original) divides the default attention factor.
            guard original >= 2 else {
                throw ModelError.invalidValue(path: path, field: originalField, reason: "must be at least 2 for rope_type \"\(type)\", found \(original)")
            }
            let factor = try parameters?.factor.map { try required($0, "factor") } ?? Double(context.maxPositions) / Double(original)
            let attentionFactor = try parameters?.attention_factor.map { try required($0, "attention_factor") }
                ?? (factor <= 1 ? 1 : (1 + log(factor) / log(Double(original))).squareRoot())
            return RoPE(theta: theta, scaling: .longrope(factors: context.maxPositions > original ? long : short, attentionFactor: attentionFactor))
        default:
            throw ModelError.unsupported(path: path, field: "\(field).rope_type", value: "\"\(type)\"", supported: "default, linear, llama3, longrope (su)")
        }
    }
}

/// `config.json`, plus whether `sliding_window` and the soft-caps are absent (nil) or explicitly null (.null):
/// synthesized decoding cannot tell those apart; and `rope_parameters` given per layer type (Gemma 3).
struct ConfigFile: Decodable {
    let raw: RawConfig
    let slidingWindow: Nullable<Int>?
    let softcaps: (attention: Nullable<Double>?, final: Nullable<Double>?)
    let ropeByLayerType: [String: RawConfig.RopeParameters]?

    private enum Key: CodingKey { case sliding_window, attn_logit_softcapping, final_logit_softcapping, rope_parameters }
    private enum LayerType: String, CodingKey { case full_attention, sliding_attention }

    init(from decoder: Decoder) throws {
        raw = try RawConfig(from: decoder)
        let container = try decoder.container(keyedBy: Key.self)
        func nullable<T: Decodable>(_ key: Key, _ type: T.Type) throws -> Nullable<T>? {
            container.contains(key) ? try container.decode(Nullable<T>.self, forKey: key) : nil
        }
        slidingWindow = try nullable(.sliding_window, Int.self)
        softcaps = (try nullable(.attn_logit_softcapping, Double.self), try nullable(.final_logit_softcapping, Double.self))
        let rope = container.contains(.rope_parameters) ? try? container.nestedContainer(keyedBy: LayerType.self, forKey: .rope_parameters) : nil
        if let rope, !rope.allKeys.isEmpty {
            ropeByLayerType = try Dictionary(uniqueKeysWithValues: rope.allKeys.map { ($0.rawValue, try rope.decode(RawConfig.RopeParameters.self, forKey: $0)) })
        } else {
            ropeByLayerType = nil
        }
    }
}

extension [String] {
    /// `layer_types` as windows: nil for "full_attention", `window` for "sliding_attention".
    fileprivate func layerWindows(_ window: Int?, layers: Int, path: String) throws -> [Int?] {
        guard count == layers else {
            throw ModelError.invalidValue(path: path, field: "layer_types", reason: "has \(count) entries but num_hidden_layers is \(layers)")
        }
        return try map { type in
            switch type {
            case "full_attention": return nil
            case "sliding_attention": return window
            default: throw ModelError.unsupported(path: path, field: "layer_types", value: "\"\(type)\"",
                                                  supported: "full_attention, sliding_attention")
            }
        }
    }
}

/// `config.json` as written by transformers (snake_case keys kept so the mapping is obvious).
struct RawConfig: Decodable {
    var architectures: [String]? = nil
    var model_type: String? = nil
    var hidden_size: Int
    var intermediate_size: Int
    var num_hidden_layers: Int
    var num_attention_heads: Int
    var num_key_value_heads: Int? = nil
    var head_dim: Int? = nil
    var vocab_size: Int
    var rms_norm_eps: Double? = nil
    var rope_theta: Double? = nil
    var rope_scaling: RopeParameters? = nil
    var rope_parameters: RopeParameters? = nil
    var max_position_embeddings: Int? = nil
    var tie_word_embeddings: Bool? = nil
    var hidden_act: String? = nil
    var attention_bias: Bool? = nil
    var mlp_bias: Bool? = nil
    var use_sliding_window: Bool? = nil
    var max_window_layers: Int? = nil
    var layer_types: [String]? = nil
    var partial_rotary_factor: Double? = nil
    var hidden_activation: String? = nil
    var query_pre_attn_scalar: Double? = nil
    var sliding_window_pattern: Int? = nil
    var rope_local_base_freq: Double? = nil
    var original_max_position_embeddings: Int? = nil
    var use_bidirectional_attention: Bool? = nil
    var bos_token_id: Int? = nil
    var eos_token_id: OneOrMany? = nil

    struct RopeParameters: Decodable {
        var rope_type: String?
        var type: String?
        var rope_theta: Double?
        var factor: Double?
        var low_freq_factor: Double?
        var high_freq_factor: Double?
        var original_max_position_embeddings: Int?
        var partial_rotary_factor: Double?
        var short_factor: [Double]?
        var long_factor: [Double]?
        var attention_factor: Double?
    }
}

/// A JSON value that may be explicitly null, so "absent" (nil) and "null" (.null) stay distinct.
enum Nullable<Wrapped: Decodable>: Decodable {
    case null
    case value(Wrapped)

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = container.decodeNil() ? .null : .value(try container.decode(Wrapped.self))
    }

    var value: Wrapped? {
        if case let .value(wrapped) = self { return wrapped }
        return nil
    }
}

/// `eos_token_id`: an integer or a list of integers.
struct OneOrMany: Decodable {
    let values: [Int]

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let list = try? container.decode([Int].self) {
            values = list
        } else {
            values = [try container.decode(Int.self)]
        }
    }
}
