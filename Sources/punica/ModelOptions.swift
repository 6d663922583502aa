import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCPU
import PunicaCUDA
import PunicaCompute
import PunicaEngine
import PunicaModel
import PunicaTokenizer

/// The device a command runs on: the composition root, the one place that picks a concrete backend.
struct DeviceOptions: ParsableArguments {
    @Option(help: "Where to run: cpu or cuda.")
    var device = "cpu"

    @Option(help: "Storage type on cuda: float16 or bfloat16 (cpu computes in float32).")
    var dtype = "bfloat16"

    @Flag(help: "On cpu, widen a bfloat16 checkpoint's weights to float32 at load (twice the memory and decode bytes; by default they stay bfloat16, as llama.cpp keeps a file's type).")
    var cpuFloat32Weights = false

    @Option(help: "KV cache element type: auto (the activation type: float32 on cpu, --dtype on cuda) or, on cpu, bfloat16 (half the cache's memory and of the bytes decode attention reads, as llama.cpp's float16 cache; keys and values rounded to bfloat16).")
    var kvCacheDtype = "auto"

    var storageType: DType {
        get throws {
            switch dtype {
            case "float16", "fp16", "half": return .float16
            case "bfloat16", "bf16": return .bfloat16
            default: throw ValidationError("--dtype \(dtype): expected float16 or bfloat16")
            }
        }
    }

    func validate() throws {
        guard ["cpu", "cuda"].contains(device) else { throw ValidationError("--device \(device): expected cpu or cuda") }
        _ = try storageType
        _ = try bfloat16KVCache
    }

    /// Whether the CPU backend keeps its KV cache in bfloat16 (`--kv-cache-dtype`).
    private var bfloat16KVCache: Bool {
        get throws {
            switch (kvCacheDtype, device) {
            case ("auto", _), ("float32", "cpu"): return false
            case ("bfloat16", "cpu"), ("bf16", "cpu"): return true
            case (_, "cpu"): throw ValidationError("--kv-cache-dtype \(kvCacheDtype): expected auto, float32 or bfloat16")
            default: throw ValidationError("--kv-cache-dtype \(kvCacheDtype): on cuda the KV cache takes --dtype; expected auto")
            }
        }
    }

    private func makeCPUBackend() throws -> CPUBackend {
        CPUBackend(bfloat16Weights: !cpuFloat32Weights, bfloat16KVCache: try bfloat16KVCache)
    }

    func makeBackend() throws -> Backend {
        switch device {
        case "cpu": return try makeCPUBackend()
        case "cuda": return try CUDABackend(dtype: storageType)
        default: throw ValidationError("--device \(device): expected cpu or cuda")
        }
    }

    /// The ranks of a model split `count` ways by tensor parallelism: a backend per GPU (cuda; collectives through
    /// NCCL) or per thread (cpu), and their collectives; one rank has none.
    func makeRanks(_ count: Int) throws -> (backends: [Backend], collectives: [Collectives]?) {
        guard count > 1 else { return ([try makeBackend()], nil) }
        switch device {
        case "cpu":
            let group = CPUGroup(size: count)
            return (try (0..<count).map { _ in try makeCPUBackend() }, (0..<count).map(group.collectives))
        default:
            let available = try CUDABackend.deviceCount()
            guard count <= available else { throw ValidationError("--tensor-parallel-size \(count): this host has \(available) GPUs") }
            let backends = try (0..<count).map { try CUDABackend(device: $0, dtype: storageType) }
            let group = try NCCLGroup(backends: backends)
            return (backends, (0..<count).map(group.collectives))
        }
    }
}

/// Tensor parallelism: how many ranks a command splits its model over.
struct ParallelOptions: ParsableArguments {
    @Option(help: "Split the model over this many ranks by tensor parallelism: GPUs on cuda (through NCCL, devices 0 ..< N), threads on cpu. A split model's steps run eagerly.")
    var tensorParallelSize = 1

    func validate() throws { try require(tensorParallelSize >= 1, "--tensor-parallel-size", "must be at least 1", tensorParallelSize) }
}

/// The model and adapters every serving command loads.
struct ModelOptions: ParsableArguments {
    @Option(help: "Hugging Face model directory (config.json, *.safetensors, tokenizer.json); default: the bundled model.")
    var model = "models"

    @Option(name: .customLong("adapter"), help: ArgumentHelp(
        "A PEFT LoRA adapter directory, registered by name (repeatable). Without any, every folder of the model's adapters/ directory is registered by its name.",
        valueName: "name=dir"))
    var adapters: [String] = []

    @OptionGroup var device: DeviceOptions

    /// The adapter flags parse and each named directory has an adapter_config.json, before the model loads.
    func validate() throws {
        for (name, directory) in try adapterDirectories() where !FileManager.default.fileExists(atPath: directory + "/adapter_config.json") {
            throw ValidationError("--adapter \(name)=\(directory): no adapter_config.json there")
        }
    }

    /// Parses `name=dir` pairs, refusing duplicates and empty parts; without any, the model's own adapters/ folders
    /// (as the bundled model ships them).
    func adapterDirectories() throws -> [(name: String, directory: String)] {
        if adapters.isEmpty {
            let bundled = model + "/adapters"
            let names = (try? FileManager.default.contentsOfDirectory(atPath: bundled)) ?? []
            return names.sorted().filter { FileManager.default.fileExists(atPath: "\(bundled)/\($0)/adapter_config.json") }
                .map { ($0, "\(bundled)/\($0)") }
        }
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

    /// The model on the chosen device (split over `tensorParallelSize` ranks), its tokenizer, and the adapter
    /// directories to register (validated when the engine registers them).
    func load(tensorParallelSize: Int = 1) throws -> (model: TensorParallelModel, tokenizer: Tokenizer, adapters: [(name: String, directory: String)]) {
        guard FileManager.default.fileExists(atPath: model + "/config.json") else {
            throw ValidationError("--model \(model): no config.json there")
        }
        guard FileManager.default.fileExists(atPath: model + "/tokenizer.json") else {
            throw ValidationError("--model \(model): no tokenizer.json there")
        }
        let (backends, collectives) = try device.makeRanks(tensorParallelSize)
        let split = try TensorParallelModel(directory: model, backends: backends, collectives: collectives)
        return (split, try Tokenizer(directory: model), try adapterDirectories())
    }
}

/// Sampling flags the engine would refuse, named by their flags (`max_tokens` → --max-tokens).
func validateSampling(_ sampling: SamplingParameters) throws {
    do {
        try sampling.validate()
    } catch let .invalid(field, reason) {
        throw ValidationError("--\(field.replacing("_", with: "-")) \(reason)")
    } catch {
        throw ValidationError(error.description)
    }
}

/// A flag's value outside its range.
func require<Value>(_ ok: Bool, _ flag: String, _ rule: String, _ value: Value) throws {
    guard ok else { throw ValidationError("\(flag) \(rule). Given: \(value)") }
}
