#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute

extension LoRAAdapter {
    /// Writes a PEFT LoRA adapter directory (`adapter_config.json`, float32 `adapter_model.safetensors`) with random
    /// weights for a model of `config`: A uniform in ±1/√in, B in ±1/√r. For benchmarks and tests, which load
    /// adapters by directory like real ones.
    public static func writeRandom(to directory: String, config: ModelConfig, rank: Int, alpha: Double, targets: [Projection],
                                   seed: UInt64) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let names = targets.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
        let settings = """
        {"peft_type": "LORA", "r": \(rank), "lora_alpha": \(alpha), "target_modules": [\(names)], "use_rslora": false,
         "use_dora": false, "bias": "none", "modules_to_save": null, "task_type": "CAUSAL_LM"}
        """
        try Data(settings.utf8).write(to: URL(fileURLWithPath: directory + "/adapter_config.json"))
        var random = SplitMix64(seed: seed)
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for layer in 0..<config.layerCount {
            for projection in targets {
                let (outputs, inputs) = projection.weightShape(config)
                let prefix = "base_model.model." + projection.checkpointName(layer: layer)
                tensors.append((prefix + ".lora_A.weight", [rank, inputs], random.floats(rank * inputs, scale: 1 / Float(inputs).squareRoot())))
                tensors.append((prefix + ".lora_B.weight", [outputs, rank], random.floats(outputs * rank, scale: 1 / Float(rank).squareRoot())))
            }
        }
        try SafeTensorsWriter.write(tensors, to: directory + "/adapter_model.safetensors")
    }
}
