#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute
import PunicaEngine
import PunicaModel
import PunicaTokenizer

/// The reference outputs written by scripts/make_model_fixtures.py (transformers + PEFT, float32 compute).
public struct HFReference: Decodable {
    public struct Case: Decodable {
        public let prompt_index: Int
        public let adapter: String?
        public let logits_key: String
        public let greedy: [Int]
        public let logprobs: [Step]
    }

    public struct Step: Decodable {
        public let id: Int
        public let token_logprob: Float
        public let top: [TokenLogprob]
    }

    public let prompts: [[Int]]
    public let cases: [Case]
    public let adapters: [String: AdapterInfo]

    public struct AdapterInfo: Decodable { public let path: String }

    public static func load(_ model: String) throws -> HFReference {
        try JSONDecoder().decode(HFReference.self, from: Fixtures.data("models/\(model)/expected.json"))
    }
}

/// How far transformers itself lands from the float32 references when it runs each fixture in float16 and bfloat16
/// (largest |logit - reference|, measured on a GPU by scripts/hf_reduced_precision.py --write). A reduced-precision
/// backend is held to its own tolerance or to this, whichever is larger: phi3-longrope's attention factor of 2 scales
/// attention scores by 4, and with them the rounding (transformers: 0.29 in float16, 2.4 in bfloat16).
public enum TransformersReducedPrecision {
    private struct File: Decodable { let max_abs_logit_error: [String: [String: Float]] }

    public static func tolerance(_ model: String, _ dtype: String, atLeast base: Float) throws -> Float {
        let file = try JSONDecoder().decode(File.self, from: Fixtures.data("models/transformers-reduced-precision.json"))
        return max(base, file.max_abs_logit_error[model]?[dtype] ?? 0)
    }
}

/// A fixture model with every adapter of its reference loaded, adapter i in slot i.
public struct LoadedFixture {
    public let name: String
    public let reference: HFReference
    public let model: LlamaModel
    public let adapterNames: [String]
    public let adapters: [LoRAAdapter]

    public init(_ name: String, backend: Backend) throws {
        self.name = name
        let directory = Fixtures.path("models/\(name)")
        let reference = try HFReference.load(name)
        let model = try LlamaModel(directory: directory, backend: backend)
        let adapterNames = reference.adapters.keys.sorted()
        adapters = try adapterNames.map {
            try LoRAAdapter(name: $0, directory: directory + "/" + reference.adapters[$0]!.path, config: model.config, backend: model.backend)
        }
        (self.reference, self.model, self.adapterNames) = (reference, model, adapterNames)
    }

    /// A serving engine on this fixture's model, tokenizer and adapters.
    public func engine(configuration: EngineConfiguration = EngineConfiguration()) async throws -> Engine {
        try await Self.engine(name, reference, model: TensorParallelModel(ranks: [model]), configuration: configuration)
    }

    /// A serving engine on fixture `name`'s tokenizer and adapters and `model` (its checkpoint, whole or split).
    public static func engine(_ name: String, _ reference: HFReference, model: TensorParallelModel,
                              configuration: EngineConfiguration) async throws -> Engine {
        let directory = Fixtures.path("models/\(name)")
        let engine = try Engine(model: model, tokenizer: try Tokenizer(directory: directory), configuration: configuration)
        for adapter in reference.adapters.keys.sorted() {
            try await engine.registerAdapter(name: adapter, directory: directory + "/" + reference.adapters[adapter]!.path)
        }
        return engine
    }
}
