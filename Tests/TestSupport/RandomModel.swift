#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute
import PunicaModel

/// Writes a model directory with random float32 weights in the layout real checkpoints use, for tests that need a
/// valid model to break (adapters: `LoRAAdapter.writeRandom`).
public enum RandomModel {
    /// The shape of a Llama checkpoint, written to `config.json`.
    public struct Shape: Sendable {
        public var hiddenSize: Int
        public var intermediateSize: Int
        public var layerCount: Int
        public var heads: Int
        public var kvHeads: Int
        public var vocabularySize: Int
        public var tieWordEmbeddings: Bool

        public init(hiddenSize: Int, intermediateSize: Int, layerCount: Int, heads: Int, kvHeads: Int,
                    vocabularySize: Int, tieWordEmbeddings: Bool) {
            self.hiddenSize = hiddenSize
            self.intermediateSize = intermediateSize
            self.layerCount = layerCount
            self.heads = heads
            self.kvHeads = kvHeads
            self.vocabularySize = vocabularySize
            self.tieWordEmbeddings = tieWordEmbeddings
        }
    }

    public static func writeModel(_ shape: Shape, to directory: String, seed: UInt64 = 0) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": \(shape.hiddenSize),
         "intermediate_size": \(shape.intermediateSize), "num_hidden_layers": \(shape.layerCount),
         "num_attention_heads": \(shape.heads), "num_key_value_heads": \(shape.kvHeads), "vocab_size": \(shape.vocabularySize),
         "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 2048, "hidden_act": "silu",
         "tie_word_embeddings": \(shape.tieWordEmbeddings), "bos_token_id": 1, "eos_token_id": 2}
        """
        try Data(config.utf8).write(to: URL(fileURLWithPath: directory + "/config.json"))
        let modelConfig = try ModelConfig.load(directory: directory)
        var random = SplitMix64(seed: seed)
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        func add(_ name: String, _ dims: [Int], scale: Float) {
            tensors.append((name, dims, random.floats(dims.reduce(1, *), scale: scale)))
        }
        let hidden = shape.hiddenSize
        add("model.embed_tokens.weight", [shape.vocabularySize, hidden], scale: 1)
        for layer in 0..<shape.layerCount {
            add("model.layers.\(layer).input_layernorm.weight", [hidden], scale: 1)
            add("model.layers.\(layer).post_attention_layernorm.weight", [hidden], scale: 1)
            for projection in Projection.of(modelConfig) {
                let (outputs, inputs) = projection.weightShape(modelConfig)
                add(projection.checkpointName(layer: layer) + ".weight", [outputs, inputs], scale: 1 / Float(inputs).squareRoot())
            }
        }
        add("model.norm.weight", [hidden], scale: 1)
        if !shape.tieWordEmbeddings { add("lm_head.weight", [shape.vocabularySize, hidden], scale: 1 / Float(hidden).squareRoot()) }
        try SafeTensorsWriter.write(tensors, to: directory + "/model.safetensors")
    }
}
