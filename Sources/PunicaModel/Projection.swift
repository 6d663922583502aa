/// The seven linear projections of a decoder layer, spelled as in checkpoints and in PEFT's `target_modules`.
public enum Projection: String, CaseIterable, Sendable {
    case q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj"
    case gate = "gate_proj", up = "up_proj", down = "down_proj"

    /// The submodule holding it: `model.layers.N.<module>.<name>`.
    public var module: String {
        switch self {
        case .q, .k, .v, .o: "self_attn"
        case .gate, .up, .down: "mlp"
        }
    }

    /// nn.Linear weight shape: [out features, in features].
    public func weightShape(_ config: ModelConfig) -> (outputs: Int, inputs: Int) {
        let attention = config.attention
        switch self {
        case .q: return (attention.queryWidth, config.hiddenSize)
        case .k, .v: return (attention.kvWidth, config.hiddenSize)
        case .o: return (config.hiddenSize, attention.queryWidth)
        case .gate, .up: return (config.intermediateSize, config.hiddenSize)
        case .down: return (config.hiddenSize, config.intermediateSize)
        }
    }

    public func checkpointName(layer: Int) -> String { "model.layers.\(layer).\(module).\(rawValue)" }
}

/// Projections as the forward pass runs them: q|k|v and gate|up each fused into one GEMM (and one LoRA launch).
public enum FusedProjection: Int, CaseIterable, Sendable {
    case qkv, o, gateUp, down

    /// The parts in the order their outputs sit side by side in the fused output row.
    var parts: [Projection] {
        switch self {
        case .qkv: [.q, .k, .v]
        case .o: [.o]
        case .gateUp: [.gate, .up]
        case .down: [.down]
        }
    }
}
