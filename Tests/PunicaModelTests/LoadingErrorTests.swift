import Foundation
import PunicaCPU
import PunicaCompute
import PunicaModel
import Testing
import TestSupport

/// Every way a model or adapter directory can be wrong gets an error that names the file and the field or tensor.
@Suite struct LoadingErrorTests {
    static let tiny = RandomModel.Shape(hiddenSize: 16, intermediateSize: 32, layerCount: 2, heads: 4, kvHeads: 2,
                                        vocabularySize: 50, tieWordEmbeddings: false)
    let directory: String
    let backend = CPUBackend()

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("punica-\(UUID().uuidString)").path
        try RandomModel.writeModel(Self.tiny, to: directory)
    }

    func editConfig(_ edit: (inout [String: Any]) -> Void) throws {
        let path = directory + "/config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
    }

    func loadError(_ load: () throws -> Void) -> ModelError? {
        do {
            try load()
            return nil
        } catch {
            return error as? ModelError
        }
    }

    func loadModel() -> ModelError? { loadError { _ = try LlamaModel(directory: directory, backend: backend) } }

    // MARK: config.json

    @Test func missingConfigNamesThePath() throws {
        try FileManager.default.removeItem(atPath: directory + "/config.json")
        #expect(loadModel() == .missingFile(path: directory + "/config.json", expected: "a JSON file"))
    }

    @Test func malformedConfigNamesTheFile() throws {
        try Data("{\"hidden_size\": ".utf8).write(to: URL(fileURLWithPath: directory + "/config.json"))
        guard case let .malformed(path, _)? = loadModel() else { Issue.record("expected a malformed-file error"); return }
        #expect(path == directory + "/config.json")
    }

    @Test func missingRequiredFieldIsNamed() throws {
        try editConfig { $0["hidden_size"] = nil }
        guard case let .invalidValue(_, field, _)? = loadModel() else { Issue.record("expected an invalid-value error"); return }
        #expect(field == "hidden_size")
    }

    @Test func unsupportedArchitectureIsNamed() throws {
        try editConfig { $0["architectures"] = ["GPT2LMHeadModel"] }
        let error = try #require(loadModel())
        #expect(error.description.contains("GPT2LMHeadModel") && error.description.contains("LlamaForCausalLM, MistralForCausalLM"))
    }

    @Test func unsupportedRopeScalingIsNamed() throws {
        try editConfig { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0] }
        #expect(loadModel() == .unsupported(path: directory + "/config.json", field: "rope_scaling.rope_type", value: "\"yarn\"",
                                            supported: "default, linear, llama3"))
    }

    @Test func incompleteLlama3ScalingIsNamed() throws {
        try editConfig { $0["rope_scaling"] = ["rope_type": "llama3", "factor": 8.0] }
        guard case let .invalidValue(_, field, _)? = loadModel() else { Issue.record("expected an invalid-value error"); return }
        #expect(field == "rope_scaling.low_freq_factor")
    }

    @Test func kvHeadsMustDivideHeads() throws {
        try editConfig { $0["num_key_value_heads"] = 3 }
        guard case let .invalidValue(_, field, _)? = loadModel() else { Issue.record("expected an invalid-value error"); return }
        #expect(field == "num_key_value_heads")
    }

    @Test func biasesAreRefused() throws {
        try editConfig { $0["attention_bias"] = true }
        guard case let .unsupported(_, field, _, _)? = loadModel() else { Issue.record("expected an unsupported error"); return }
        #expect(field == "attention_bias")
    }

    @Test func transformers5RopeParametersAreRead() throws {
        try editConfig {
            $0["rope_theta"] = nil
            $0["rope_parameters"] = ["rope_type": "linear", "rope_theta": 500000.0, "factor": 2.0]
        }
        let config = try ModelConfig.load(directory: directory)
        #expect(config.rope == RoPE(theta: 500000, scaling: .linear(factor: 2)))
    }

    // MARK: safetensors

    @Test func missingWeightsNameTheExpectedFiles() throws {
        try FileManager.default.removeItem(atPath: directory + "/model.safetensors")
        #expect(loadModel() == .missingFile(path: directory + "/model.safetensors",
                                            expected: "model.safetensors or model.safetensors.index.json"))
    }

    /// Rewrites model.safetensors with `edit` applied to its tensors.
    func editWeights(_ edit: (inout [(name: String, shape: [Int], values: [Float])]) -> Void) throws {
        var tensors = try readTensors(directory + "/model.safetensors")
        edit(&tensors)
        try SafeTensorsWriter.write(tensors, to: directory + "/model.safetensors")
    }

    @Test func missingTensorIsNamed() throws {
        try editWeights { $0.removeAll { $0.name == "model.layers.1.mlp.up_proj.weight" } }
        #expect(loadModel() == .missingTensor(path: directory + "/model.safetensors", tensor: "model.layers.1.mlp.up_proj.weight"))
    }

    @Test func wrongShapeNamesExpectedAndActual() throws {
        try editWeights { tensors in
            let index = tensors.firstIndex { $0.name == "model.layers.0.self_attn.k_proj.weight" }!
            tensors[index] = (tensors[index].name, [4, 16], Array(tensors[index].values.prefix(64)))
        }
        #expect(loadModel() == .tensorShape(path: directory + "/model.safetensors", tensor: "model.layers.0.self_attn.k_proj.weight",
                                            expected: [8, 16], actual: [4, 16]))
    }

    @Test func unsupportedDTypeIsNamed() throws {
        try writeRawSafetensors(header: #"{"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}"#, dataBytes: 2)
        #expect(loadError { _ = try SafeTensorsFile(path: directory + "/model.safetensors") }
                == .tensorDType(path: directory + "/model.safetensors", tensor: "w", dtype: "I8"))
    }

    @Test func truncatedDataIsMalformed() throws {
        try writeRawSafetensors(header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, dataBytes: 8)
        guard case .malformed? = loadError({ _ = try SafeTensorsFile(path: directory + "/model.safetensors") }) else {
            Issue.record("expected a malformed-file error"); return
        }
    }

    @Test func headerLengthBeyondTheFileIsMalformed() throws {
        var bytes = Data()
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array("{}".utf8))
        try bytes.write(to: URL(fileURLWithPath: directory + "/model.safetensors"))
        guard case .malformed? = loadError({ _ = try SafeTensorsFile(path: directory + "/model.safetensors") }) else {
            Issue.record("expected a malformed-file error"); return
        }
    }

    @Test func missingShardIsNamed() throws {
        let index = #"{"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}"#
        try Data(index.utf8).write(to: URL(fileURLWithPath: directory + "/model.safetensors.index.json"))
        #expect(loadModel() == .missingFile(path: directory + "/model-00001-of-00002.safetensors", expected: "a safetensors file"))
    }

    func writeRawSafetensors(header: String, dataBytes: Int) throws {
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array(header.utf8))
        bytes.append(Data(count: dataBytes))
        try bytes.write(to: URL(fileURLWithPath: directory + "/model.safetensors"))
    }

    // MARK: PEFT adapters

    var adapterDirectory: String { directory + "/adapter" }

    func loadAdapter() -> ModelError? {
        loadError {
            _ = try LoRAAdapter(name: "a", directory: adapterDirectory, config: ModelConfig.load(directory: directory), backend: backend)
        }
    }

    func writeAdapter(targets: [Projection] = [.q, .v, .down], editConfig: ((inout [String: Any]) -> Void)? = nil) throws {
        try LoRAAdapter.writeRandom(to: adapterDirectory, config: ModelConfig.load(directory: directory), rank: 4, alpha: 8, targets: targets, seed: 1)
        guard let editConfig else { return }
        let path = adapterDirectory + "/adapter_config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        editConfig(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
    }

    @Test func validAdapterLoadsWithItsScale() throws {
        try writeAdapter { $0["use_rslora"] = true }
        let adapter = try LoRAAdapter(name: "a", directory: adapterDirectory, config: ModelConfig.load(directory: directory), backend: backend)
        #expect(adapter.rank == 4 && adapter.scale == 4 && adapter.targets == [.q, .v, .down])
    }

    @Test(arguments: [
        ("use_dora", true as Any),
        ("modules_to_save", ["lm_head"] as Any),
        ("bias", "lora_only" as Any),
        ("peft_type", "IA3" as Any),
        ("rank_pattern", ["q_proj": 8] as Any),
        ("layers_to_transform", [0] as Any),
    ])
    func unsupportedAdapterFeaturesAreRefused(field: String, value: Any) throws {
        try writeAdapter { $0[field] = value }
        guard case let .unsupported(path, reportedField, _, _)? = loadAdapter() else { Issue.record("expected \(field) to be refused"); return }
        #expect(path == adapterDirectory + "/adapter_config.json" && reportedField == field)
    }

    @Test(arguments: ["lm_head", "embed_tokens"])
    func embeddingAndHeadTargetsAreRefused(target: String) throws {
        try writeAdapter { $0["target_modules"] = ["q_proj", target] }
        let error = try #require(loadAdapter())
        #expect(error.description.contains("target_modules") && error.description.contains(target))
    }

    @Test func regexTargetModulesAreRefused() throws {
        try writeAdapter { $0["target_modules"] = ".*proj" }
        guard case .unsupported(_, "target_modules", _, _)? = loadAdapter() else { Issue.record("expected a refusal"); return }
    }

    @Test func unknownTensorIsNamed() throws {
        try writeAdapter()
        try appendAdapterTensor("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", shape: [16])
        guard case let .unexpectedTensor(_, tensor, _)? = loadAdapter() else { Issue.record("expected an unexpected-tensor error"); return }
        #expect(tensor == "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector")
    }

    @Test func tensorOfUntargetedModuleIsNamed() throws {
        try writeAdapter()
        try appendAdapterTensor("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", shape: [4, 16])
        guard case let .unexpectedTensor(_, tensor, reason)? = loadAdapter() else { Issue.record("expected an unexpected-tensor error"); return }
        #expect(tensor.hasSuffix("up_proj.lora_A.weight") && reason.contains("target_modules"))
    }

    @Test func missingLoRAMatrixIsNamed() throws {
        try writeAdapter(editConfig: { $0["target_modules"] = ["q_proj", "v_proj", "down_proj", "o_proj"] })
        #expect(loadAdapter() == .missingTensor(path: adapterDirectory + "/adapter_model.safetensors",
                                                tensor: "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight"))
    }

    @Test func rankMismatchNamesShapes() throws {
        try writeAdapter { $0["r"] = 8 }
        #expect(loadAdapter() == .tensorShape(path: adapterDirectory + "/adapter_model.safetensors",
                                              tensor: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                                              expected: [8, 16], actual: [4, 16]))
    }

    @Test func pickleWeightsAreRefusedWithAHint() throws {
        try writeAdapter()
        try FileManager.default.moveItem(atPath: adapterDirectory + "/adapter_model.safetensors", toPath: adapterDirectory + "/adapter_model.bin")
        let error = try #require(loadAdapter())
        #expect(error.description.contains("adapter_model.bin") && error.description.contains("safe_serialization"))
    }

    func appendAdapterTensor(_ name: String, shape: [Int]) throws {
        let path = adapterDirectory + "/adapter_model.safetensors"
        var tensors = try readTensors(path)
        tensors.append((name, shape, [Float](repeating: 0.5, count: shape.reduce(1, *))))
        try SafeTensorsWriter.write(tensors, to: path)
    }

    /// Every tensor of a float32 safetensors file written by `SafeTensorsWriter`.
    func readTensors(_ path: String) throws -> [(name: String, shape: [Int], values: [Float])] {
        let file = try SafeTensorsFile(path: path)
        return file.tensorNames.map { name in
            let data = file.tensor(name)!
            var values = [Float](repeating: 0, count: data.elementCount)
            HalfConversion.toFloat32(data.bytes, dtype: data.dtype, count: values.count, into: &values)
            return (name, data.shape, values)
        }
    }
}
