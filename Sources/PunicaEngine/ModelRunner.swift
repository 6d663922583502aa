import PunicaCompute
import PunicaModel

/// What the engine's step loop drives: a model with its KV cache and adapter slots. `LlamaRunner` runs the real
/// model; tests script a fake one.
public protocol ModelRunner: AnyObject {
    var vocabularySize: Int { get }
    var maxPositions: Int { get }
    var eosTokenIDs: [Int] { get }
    /// The KV cache's page size and page count.
    var pageSize: Int { get }
    var pageCount: Int { get }
    /// Adapter slots a step can address.
    var adapterSlotCount: Int { get }
    /// Checks an adapter directory against the model without loading it.
    func validateAdapter(directory: String) throws
    /// Reads an adapter and uploads its weights; called off the step loop.
    func loadAdapter(name: String, directory: String) throws -> AnyObject
    /// Makes `adapters[i]` (a `loadAdapter` result) the adapter of slot i for the following steps.
    func setSlots(_ adapters: [AnyObject?])
    /// Runs one step and picks the next token of each of `batch.logitRows` with `choices` (one each). Rows whose
    /// `returnLogits` is true also bring their raw logits back (for logprobs); the others never leave the device.
    func run(_ batch: StepBatch, choices: [TokenChoice], returnLogits: [Bool]) -> StepOutput
}

/// What a step gives the engine: per logit row, its token and, where asked for, its logits ([vocabularySize]).
public struct StepOutput {
    public var tokens: [Int]
    public var logits: [[Float]?]

    public init(tokens: [Int], logits: [[Float]?]) {
        self.tokens = tokens
        self.logits = logits
    }
}

/// The real model on its backend.
public final class LlamaRunner: ModelRunner {
    public let model: LlamaModel
    public let adapterSlotCount: Int
    private let cache: KVCache
    private var resident = ResidentAdapters.none

    public init(model: LlamaModel, pageSize: Int, pageCount: Int, adapterSlots: Int) {
        self.model = model
        adapterSlotCount = adapterSlots
        cache = model.makeKVCache(layout: PageLayout(pageSize: pageSize, pageCount: pageCount))
    }

    public var vocabularySize: Int { model.config.vocabularySize }
    public var maxPositions: Int { model.config.maxPositionEmbeddings }
    public var eosTokenIDs: [Int] { model.config.eosTokenIDs }
    public var pageSize: Int { cache.layout.pageSize }
    public var pageCount: Int { cache.layout.pageCount }

    public func validateAdapter(directory: String) throws {
        try LoRAAdapter.validate(directory: directory, config: model.config)
    }

    public func loadAdapter(name: String, directory: String) throws -> AnyObject {
        try LoRAAdapter(name: name, directory: directory, config: model.config, backend: model.backend)
    }

    public func setSlots(_ adapters: [AnyObject?]) {
        resident = ResidentAdapters(adapters.map { $0 as? LoRAAdapter }, layerCount: model.config.layerCount)
    }

    public func run(_ batch: StepBatch, choices: [TokenChoice], returnLogits: [Bool]) -> StepOutput {
        let logits = model.forward(model.backend.plan(batch), cache: cache, adapters: resident)
        let vocabulary = logits.rowWidth
        let all = returnLogits.contains(true) ? model.backend.toHost(logits) : []
        return StepOutput(tokens: model.backend.sample(logits, choices), logits: returnLogits.enumerated().map { row, wanted in
            wanted ? Array(all[row * vocabulary ..< (row + 1) * vocabulary]) : nil
        })
    }
}
