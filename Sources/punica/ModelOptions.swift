import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCPU
import PunicaCompute
import PunicaModel
import PunicaTokenizer

/// The model, adapters and device every command loads: the composition root, the one place that picks a backend.
struct ModelOptions: ParsableArguments {
    @Option(help: "Hugging Face model directory (config.json, *.safetensors, tokenizer.json).")
    var model = "models"

    @Option(name: .customLong("adapter"), help: ArgumentHelp("A PEFT LoRA adapter directory, registered by name (repeatable).",
                                                             valueName: "name=dir"))
    var adapters: [String] = []

    @Option(help: "Where to run: cpu.")
    var device = "cpu"

    func makeBackend() throws -> Backend {
        guard device == "cpu" else { throw ValidationError("--device \(device) is not available (available: cpu)") }
        return CPUBackend()
    }

    /// Parses `name=dir` pairs, refusing duplicates and empty parts.
    func adapterDirectories() throws -> [(name: String, directory: String)] {
        var seen = Set<String>()
        return try adapters.map { pair in
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex, pair.index(after: equals) != pair.endIndex else {
                throw ValidationError("--adapter \(pair): expected NAME=DIR")
            }
            let name = String(pair[..<equals])
            guard seen.insert(name).inserted else { throw ValidationError("--adapter \(name) is given twice") }
            return (name, String(pair[pair.index(after: equals)...]))
        }
    }

    func load() throws -> (model: LlamaModel, tokenizer: Tokenizer?, adapters: [LoRAAdapter]) {
        guard FileManager.default.fileExists(atPath: model + "/config.json") else {
            throw ValidationError("--model \(model): no config.json there")
        }
        let backend = try makeBackend()
        let llama = try LlamaModel(directory: model, backend: backend)
        let tokenizer = FileManager.default.fileExists(atPath: model + "/tokenizer.json") ? try Tokenizer(directory: model) : nil
        let adapters = try adapterDirectories().map {
            try LoRAAdapter(name: $0.name, directory: $0.directory, config: llama.config, backend: backend)
        }
        return (llama, tokenizer, adapters)
    }
}
