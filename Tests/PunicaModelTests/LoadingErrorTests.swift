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
                                            supported: "default, linear, llama3, longrope (su)"))
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

    /// Each range check names the field and the value it found.
    @Test(arguments: [
        ("rms_norm_eps", -1e-5 as Any, "rms_norm_eps", "must be a positive float32, found -1e-05"),
        ("rms_norm_eps", 0.0 as Any, "rms_norm_eps", "must be a positive float32, found 0.0"),
        ("rms_norm_eps", 1e-50 as Any, "rms_norm_eps", "must be a positive float32"),
        ("rope_theta", 0.0 as Any, "rope_theta", "must be a positive number, found 0.0"),
        ("rope_theta", -10000.0 as Any, "rope_theta", "must be a positive number, found -10000.0"),
        ("rope_theta", 1e-300 as Any, "rope_theta", "(1e-300) gives non-finite rotary frequencies for head_dim 4"),
        ("head_dim", 1 << 61 as Any, "head_dim", "must be an even number in 2...1048576, found 2305843009213693952"),
        ("head_dim", 1 << 19 as Any, "head_dim", "× num_attention_heads (524288 × 4) must be at most 1048576"),
        ("hidden_size", 18 as Any, "hidden_size", "(18) must be a multiple of num_attention_heads (4)"),
        ("hidden_size", 1 << 40 as Any, "hidden_size", "must be in 1...1048576, found 1099511627776"),
        ("vocab_size", 0 as Any, "vocab_size", "must be in 1...1048576, found 0"),
        ("num_hidden_layers", 5000 as Any, "num_hidden_layers", "must be in 1...4096, found 5000"),
        ("max_position_embeddings", -2 as Any, "max_position_embeddings", "must be in 1...1073741824, found -2"),
        ("bos_token_id", 50 as Any, "bos_token_id", "50 is outside the vocabulary (0..<50)"),
        ("eos_token_id", [2, -1] as Any, "eos_token_id", "-1 is outside the vocabulary (0..<50)"),
        ("rope_scaling", ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192] as Any,
         "rope_scaling.high_freq_factor", "(4.0) must be greater than low_freq_factor (4.0)"),
        // LongRoPE: a factor per rotated pair (head_dim 4 here: 2), both sets, positive.
        ("rope_scaling", ["type": "longrope", "short_factor": [1.0], "long_factor": [1.0, 2.0]] as Any,
         "rope_scaling.short_factor", "holds 1 factors, but head_dim / 2 is 2"),
        ("rope_scaling", ["rope_type": "longrope", "short_factor": [1.0, 1.0]] as Any, "rope_scaling.long_factor", "is missing"),
        ("rope_scaling", ["rope_type": "su", "short_factor": [1.0, 0.0], "long_factor": [1.0, 2.0]] as Any,
         "rope_scaling.short_factor", "must hold positive numbers"),
        ("rope_scaling", ["rope_type": "longrope", "short_factor": [1.0, 1.0], "long_factor": [1.0, 2.0], "attention_factor": 0.0] as Any,
         "rope_scaling.attention_factor", "must be a positive number"),
    ])
    func outOfRangeConfigValuesAreNamed(field: String, value: Any, reported: String, reason: String) throws {
        try editConfig { $0[field] = value }
        guard case let .invalidValue(path, actualField, actualReason)? = loadModel() else { Issue.record("expected \(field) to be refused"); return }
        #expect(path == directory + "/config.json" && actualField == reported)
        #expect(actualReason.hasPrefix(reason), "\(actualReason)")
    }

    @Test(arguments: [0, -4096])
    func mistralSlidingWindowMustBePositive(window: Int) throws {
        try editConfig {
            $0["architectures"] = ["MistralForCausalLM"]
            $0["sliding_window"] = window
        }
        #expect(loadModel() == .invalidValue(path: directory + "/config.json", field: "sliding_window",
                                             reason: "must be at least 1 (or null for none), found \(window)"))
    }

    /// Fewer layers in config.json than in the checkpoint would run part of the model; more would miss tensors.
    @Test(arguments: [1, 3])
    func layerCountMustMatchTheCheckpoint(layers: Int) throws {
        try editConfig { $0["num_hidden_layers"] = layers }
        #expect(loadModel() == .invalidValue(path: directory + "/config.json", field: "num_hidden_layers",
                                             reason: "is \(layers) but the checkpoint has 2 layers"))
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

    @Test(arguments: [Float.nan, .infinity, -.infinity])
    func nonFiniteWeightIsNamed(value: Float) throws {
        try editWeights { tensors in
            let index = tensors.firstIndex { $0.name == "model.layers.1.mlp.up_proj.weight" }!
            tensors[index].values[37] = value
        }
        let error = try #require(loadModel())
        #expect(error.description == "\(directory)/model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight' holds \(value) at element 37 (weights must be finite)")
    }

    /// The word-at-a-time scan finds the same first non-finite element as a plain loop, in every lane and the tail.
    @Test func nonFiniteScanMatchesAPlainLoop() throws {
        var random = SplitMix64(seed: 11)
        let bitsOf: [(DType, (Float) -> [UInt8])] = [
            (.float32, { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }),
            (.float16, { withUnsafeBytes(of: Float16($0).bitPattern.littleEndian) { Array($0) } }),
            (.bfloat16, { withUnsafeBytes(of: HalfConversion.bfloat16($0).littleEndian) { Array($0) } }),
        ]
        for (dtype, bits) in bitsOf {
            for _ in 0..<200 {
                var values = random.floats(Int.random(in: 1...23, using: &random), scale: 1000)
                for _ in 0..<Int.random(in: 0...2, using: &random) {
                    values[Int.random(in: 0..<values.count, using: &random)] = [Float.nan, .infinity, -.infinity].randomElement(using: &random)!
                }
                let header = #"{"t":{"dtype":"\#(dtype)","shape":[\#(values.count)],"data_offsets":[0,\#(values.count * dtype.byteSize)]}}"#
                var bytes = Data()
                withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
                bytes.append(contentsOf: Array(header.utf8) + values.flatMap(bits))
                let tensor = try SafeTensorsFile(bytes: bytes, path: "scan").tensor("t")!
                #expect(tensor.firstNonFinite()?.index == values.firstIndex { !$0.isFinite }, "\(dtype) \(values)")
            }
        }
    }

    /// Headers the reference implementation refuses, each for the reason named, checked without overflow.
    @Test(arguments: [
        (#"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#, 16, "overflows a byte count"),
        (#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, 4, "malformed shape [-1]"),
        (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, 4, "data_offsets [-4, 0] do not hold"),
        (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775804,9223372036854775807]}}"#, 4, "data_offsets [9223372036854775804"),
        (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#, 4, "malformed shape [1] or data_offsets [0]"),
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12,
         "tensor 'b' data_offsets [4, 12] overlap another tensor's bytes (up to 8)"),
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8,
         "tensor 'b' data_offsets [0, 8] overlap"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "tensor 'a' data_offsets [4, 8] leave bytes 0..<4 unused"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 8, "the tensors cover 4 of the file's 8 data bytes"),
    ])
    func malformedHeadersAreRefused(header: String, dataBytes: Int, reason: String) throws {
        try writeRawSafetensors(header: header, dataBytes: dataBytes)
        let error = try #require(loadError { _ = try SafeTensorsFile(path: directory + "/model.safetensors") })
        guard case let .malformed(path, actual) = error else { Issue.record("expected a malformed-file error, got \(error)"); return }
        #expect(path == directory + "/model.safetensors" && actual.contains(reason), "\(actual)")
    }

    @Test(arguments: [UInt64(1) << 63, UInt64.max, UInt64(Int.max)])
    func headerLengthBeyondIntIsMalformed(length: UInt64) throws {
        var bytes = Data()
        withUnsafeBytes(of: length.littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array("{}".utf8))
        let error = loadError { _ = try SafeTensorsFile(bytes: bytes, path: "x.safetensors") }
        #expect(error == .malformed(path: "x.safetensors", reason: "header length \(length) does not fit in the file's 10 bytes (at most 100000000)"))
    }

    /// A FIFO or a directory in place of a file is refused at once (opening a FIFO for reading would wait for a writer).
    @Test(arguments: ["model.safetensors", "config.json"])
    func onlyRegularFilesAreOpened(name: String) throws {
        let path = directory + "/" + name
        for make in [{ mkfifo(path, 0o600) }, { mkdir(path, 0o700) }] {
            try? FileManager.default.removeItem(atPath: path)
            #expect(make() == 0)
            let expected = name == "config.json" ? "a JSON file" : "a safetensors file"
            #expect(loadModel() == .malformed(path: path, reason: "is not a regular file (expected \(expected))"))
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

    /// A wrong-typed field is named and described in JSON's terms, never Swift's (these messages reach API clients).
    @Test func wrongTypeIsDescribedInJSONTerms() throws {
        try writeAdapter { $0["r"] = "four" }
        guard case let .invalidValue(_, field, reason)? = loadAdapter() else { Issue.record("expected r to be refused"); return }
        #expect(field == "r" && reason == "must be an integer", "\(reason)")
        try writeAdapter { $0["target_modules"] = 7 }
        let message = loadAdapter()?.description ?? ""
        #expect(message.contains("target_modules") && !message.contains("Swift") && !message.contains("Array<") && !message.contains("decode"),
                "\(message)")
    }

    @Test(arguments: ["lm_head", "embed_tokens"])
    func embeddingAndHeadTargetsAreRefused(target: String) throws {
        try writeAdapter { $0["target_modules"] = ["q_proj", target] }
        let error = try #require(loadAdapter())
        #expect(error.description.contains("target_modules") && error.description.contains(target))
    }

    /// Phi-3's fused modules on a Llama model, and Llama's separate ones on a Phi-3 model.
    @Test(arguments: ["qkv_proj", "gate_up_proj"])
    func targetsOfAnotherArchitectureAreRefused(target: String) throws {
        try writeAdapter { $0["target_modules"] = ["q_proj", target] }
        guard case let .unsupported(_, field, value, supported)? = loadAdapter() else { Issue.record("expected a refusal"); return }
        #expect(field == "target_modules" && value.contains(target) && supported.contains("LlamaForCausalLM"), "\(supported)")

        let phi3 = try ModelConfig.load(directory: Fixtures.path("models/phi3-fused"))
        try LoRAAdapter.writeRandom(to: adapterDirectory, config: phi3, rank: 2, alpha: 2, targets: [.o, .q], seed: 1)
        let refused = loadError { _ = try LoRAAdapter(name: "a", directory: adapterDirectory, config: phi3, backend: backend) }
        guard case let .unsupported(_, "target_modules", value, supported)? = refused else { Issue.record("expected a refusal"); return }
        #expect(value.contains("q_proj") && supported == "Phi3ForCausalLM's qkv_proj, o_proj, gate_up_proj, down_proj")
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

    @Test(arguments: [Float.nan, .infinity, 70000])
    func nonFiniteOrHugeAdapterValuesAreNamed(value: Float) throws {
        try writeAdapter()
        let path = adapterDirectory + "/adapter_model.safetensors"
        var tensors = try readTensors(path)
        let index = tensors.firstIndex { $0.name == "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight" }!
        tensors[index].values[5] = value
        try SafeTensorsWriter.write(tensors, to: path)
        let expected = "\(path): tensor 'base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight' holds \(value) at element 5 "
            + "(LoRA values must be finite and within ±65504.0)"
        #expect(loadAdapter()?.description == expected)
        // Registration checks the same, before the adapter is ever used.
        #expect(loadError { try LoRAAdapter.validate(directory: adapterDirectory, config: ModelConfig.load(directory: directory)) }?
                .description == expected)
    }

    /// B is checked with the scale folded in: 30 000 is fine in B at scale 2 (α 8, r 4) only if doubled stays within ±65504.
    @Test func scaledBValuesAreChecked() throws {
        try writeAdapter()
        let path = adapterDirectory + "/adapter_model.safetensors"
        var tensors = try readTensors(path)
        let index = tensors.firstIndex { $0.name == "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight" }!
        tensors[index].values[0] = 30000
        try SafeTensorsWriter.write(tensors, to: path)
        #expect(loadAdapter() == nil)
        tensors[index].values[0] = 40000
        try SafeTensorsWriter.write(tensors, to: path)
        #expect(loadAdapter()?.description == "\(path): tensor 'base_model.model.model.layers.0.mlp.down_proj.lora_B.weight' holds 40000.0 "
                + "at element 0 (LoRA values × scale 2.0 must be finite and within ±65504.0)")
    }

    @Test(arguments: [(1e39, false), (-1e308, false), (4097.0, false), (2050.0, true)])
    func scaleBeyondTheBoundIsNamed(alpha: Double, rsLoRA: Bool) throws {
        try writeAdapter {
            $0["lora_alpha"] = alpha
            $0["use_rslora"] = rsLoRA
        }
        guard case let .invalidValue(path, field, reason)? = loadAdapter() else { Issue.record("expected lora_alpha \(alpha) to be refused"); return }
        #expect(path == adapterDirectory + "/adapter_config.json" && field == "lora_alpha")
        #expect(reason.hasSuffix("(lora_alpha / \(rsLoRA ? "√r" : "r")), beyond ±1024.0"), "\(reason)")
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
