/// The linear projections of a decoder layer, spelled as in checkpoints and in PEFT's `target_modules`.
public enum Projection: String, CaseIterable, Sendable {
    case q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj"
    case gate = "gate_proj", up = "up_proj", down = "down_proj"
    /// Phi-3 stores q|k|v and gate|up as one module each, in its checkpoints and as PEFT targets.
    case qkv = "qkv_proj", gateUp = "gate_up_proj"

    /// The projections a model of this config has, as its checkpoint and its adapters name them.
    public static func of(_ config: ModelConfig) -> [Projection] {
        config.fusedCheckpoint ? [.qkv, .o, .gateUp, .down] : [.q, .k, .v, .o, .gate, .up, .down]
    }

    /// The submodule holding it: `model.layers.N.<module>.<name>`.
    public var module: String {
        switch self {
        case .q, .k, .v, .o, .qkv: "self_attn"
        case .gate, .up, .down, .gateUp: "mlp"
        }
    }

    /// nn.Linear weight shape: [out features, in features].
    public func weightShape(_ config: ModelConfig) -> (outputs: Int, inputs: Int) {
        let attention = config.attention
        switch self {
        case .q: return (attention.queryWidth, config.hiddenSize)
        case .k, .v: return (attention.kvWidth, config.hiddenSize)
        case .qkv: return (attention.qkvWidth, config.hiddenSize)
        case .o: return (config.hiddenSize, attention.queryWidth)
        case .gate, .up: return (config.intermediateSize, config.hiddenSize)
        case .gateUp: return (2 * config.intermediateSize, config.hiddenSize)
        case .down: return (config.hiddenSize, config.intermediateSize)
        }
    }

    public func checkpointName(layer: Int) -> String { "model.layers.\(layer).\(module).\(rawValue)" }
}

/// Projections as the forward pass runs them: q|k|v and gate|up each fused into one GEMM (and one LoRA launch).
public enum FusedProjection: Int, CaseIterable, Sendable {
    case qkv, o, gateUp, down

    /// The parts in the order their outputs sit side by side in the fused output row: one part where the
    /// checkpoint already fuses them (Phi-3).
    func parts(_ config: ModelConfig) -> [Projection] {
        switch self {
        case .qkv: config.fusedCheckpoint ? [.qkv] : [.q, .k, .v]
        case .o: [.o]
        case .gateUp: config.fusedCheckpoint ? [.gateUp] : [.gate, .up]
        case .down: [.down]
        }
    }
}
