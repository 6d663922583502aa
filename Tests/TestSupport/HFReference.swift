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
        let directory = Fixtures.path("models/\(name)")
        let engine = try Engine(model: model, tokenizer: try Tokenizer(directory: directory), configuration: configuration)
        for adapter in adapterNames {
            try await engine.registerAdapter(name: adapter, directory: directory + "/" + reference.adapters[adapter]!.path)
        }
        return engine
    }
}
