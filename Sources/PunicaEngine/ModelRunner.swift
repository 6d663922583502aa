import PunicaCompute
import PunicaModel

/// What the engine's step loop drives: a model with its KV cache and adapter slots. `LlamaRunner` runs the real
/// model; tests script a fake one.
public protocol ModelRunner: AnyObject {
    var vocabularySize: Int { get }
    var maxPositions: Int { get }
    var eosTokenIDs: [Int] { get }
    /// The KV cache's page size, page count and element type.
    var pageSize: Int { get }
    var pageCount: Int { get }
    var kvCacheDType: DType { get }
    /// Adapter slots a step can address.
    var adapterSlotCount: Int { get }
    /// Checks an adapter directory against the model without loading it.
    func validateAdapter(directory: String) throws
    /// Reads an adapter and converts it for the backend, into host memory (the host tier's entry); called off the
    /// step loop, several at once.
    func loadAdapter(name: String, directory: String) throws -> HostAdapter
    /// Makes `adapter` the adapter of `slot` for the following steps (uploading it: one copy); nil empties the slot.
    func setSlot(_ slot: Int, to adapter: HostAdapter?)
    /// Runs one step and picks the next token of each of `batch.logitRows` with `choices` (one each). Rows whose
    /// `returnLogits` is true also bring their raw logits back (for logprobs); the others never leave the device.
    /// On a device that runs behind the host it returns once the step is queued (unless logits come back) and the
    /// output's tokens arrive later; `fed` rows take their input from the step before's tokens as the device has them.
    func run(_ batch: StepBatch, fed: FedTokens?, choices: [TokenChoice], returnLogits: [Bool]) -> StepOutput
}

/// What a step gives the engine: per logit row, its token (padding rows of a replayed step may follow) and, where
/// asked for, its logits ([vocabularySize]).
public struct StepOutput {
    public var tokens: SampledTokens
    public var logits: [[Float]?]

    public init(tokens: SampledTokens, logits: [[Float]?]) {
        self.tokens = tokens
        self.logits = logits
    }
}

/// The real model on its backend, or split over several (`TensorParallelModel`). Decode-only steps of a lone rank
/// replay recorded steps where the backend can record them (`RecordedDecodeSteps`, CUDA graphs); every other step,
/// every step of a split model, or every step with `recordDecodeSteps` off, runs `forward`.
public final class LlamaRunner: ModelRunner {
    public let model: TensorParallelModel
    public let adapterSlotCount: Int
    /// [model rank]
    private let caches: [KVCache]
    private let resident: [ResidentAdapters]
    private var recordings: RecordedDecodeSteps?
    /// Each rank's tokens of the step before. Every rank of a split model gathers the same logits and samples the same
    /// tokens from them, so a fed row takes its token on each rank's own device.
    private var lastSampled: [SampledTokens] = []
    /// What start-up recorded, for its log; empty when nothing is recorded.
    public private(set) var recordingSummary = ""

    public convenience init(model: LlamaModel, pageSize: Int, pageCount: Int, adapterSlots: Int, recordDecodeSteps: Bool = true,
                            maxLoRARank: Int = 16, maxBatch: Int = 256) {
        self.init(model: TensorParallelModel(ranks: [model]), pageSize: pageSize, pageCount: pageCount, adapterSlots: adapterSlots,
                  recordDecodeSteps: recordDecodeSteps, maxLoRARank: maxLoRARank, maxBatch: maxBatch)
    }

    /// - Parameters: maxLoRARank: the widest rank recorded steps hold without a new recording; maxBatch: the
    ///   largest decode batch recorded.
    public init(model: TensorParallelModel, pageSize: Int, pageCount: Int, adapterSlots: Int, recordDecodeSteps: Bool = true,
                maxLoRARank: Int = 16, maxBatch: Int = 256) {
        self.model = model
        adapterSlotCount = adapterSlots
        let config = model.config
        caches = model.makeKVCaches(layout: PageLayout(pageSize: pageSize, pageCount: pageCount))
        // v is at least as wide as a rank-maxLoRARank adapter on q|k|v needs, so recordings outlive adapter changes.
        resident = model.ranks.map { _ in
            ResidentAdapters(Array(repeating: nil, count: adapterSlots), layerCount: config.layerCount, reservedRank: 3 * maxLoRARank)
        }
        // A split model's steps run eagerly: recording its collectives is not done yet.
        guard recordDecodeSteps, let alone = model.ranks.first, model.ranks.count == 1 else { return }
        let maxContext = min(config.maxPositionEmbeddings, (pageCount - 1) * pageSize)
        let sizes = RecordedDecodeSteps.defaultSizes.filter { $0 <= max(1, maxBatch) }
        guard let steps = RecordedDecodeSteps(model: alone, cache: caches[0], adapters: resident[0], maxContext: maxContext,
                                              sizes: sizes) else { return }
        do {
            let recorded = try steps.recordAll(context: 1)
            recordings = steps
            recordingSummary = "recorded \(recorded.count) decode steps (batches \(steps.sizes.first!)–\(steps.sizes.last!), "
                + "with and without LoRA) in \(recorded.time)"
        } catch {
            recordingSummary = "decode steps run eagerly: recording failed (\(error))"
        }
    }

    public var vocabularySize: Int { model.config.vocabularySize }
    public var maxPositions: Int { model.config.maxPositionEmbeddings }
    public var eosTokenIDs: [Int] { model.config.eosTokenIDs }
    public var pageSize: Int { caches[0].layout.pageSize }
    public var pageCount: Int { caches[0].layout.pageCount }
    public var kvCacheDType: DType { model.ranks[0].backend.kvCacheDType }

    public func validateAdapter(directory: String) throws {
        try LoRAAdapter.validate(directory: directory, config: model.config)
    }

    /// Every rank's part, so that uploading it is one copy per rank.
    public func loadAdapter(name: String, directory: String) throws -> HostAdapter {
        try HostAdapter(name: name, directory: directory, config: model.config, ranks: model.ranks.map { ($0.backend, $0.shard) })
    }

    public func setSlot(_ slot: Int, to adapter: HostAdapter?) {
        for (index, rank) in model.ranks.enumerated() {
            var adapters = resident[index].adapters
            adapters[slot] = adapter.map { LoRAAdapter($0, backend: rank.backend, modelRank: index) }
            resident[index].update(adapters)
        }
    }

    public func run(_ batch: StepBatch, fed: FedTokens?, choices: [TokenChoice], returnLogits: [Bool]) -> StepOutput {
        let replay = replayed(batch, fed: fed)
        let previous = lastSampled
        let steps = model.onEveryRank { index, rank -> (logits: Tensor, tokens: SampledTokens) in
            let logits = replay ?? {
                let plan = rank.backend.plan(batch)
                if let fed { rank.backend.feed(FedTokens(source: index == 0 ? fed.source : previous[index], rows: fed.rows), plan: plan) }
                return rank.forward(plan, cache: self.caches[index], adapters: self.resident[index])
            }()
            // A replay's logits have a row per recorded row: the padding rows' tokens are drawn greedily and dropped.
            let padding = Array(repeating: TokenChoice.greedy, count: logits.rows - choices.count)
            return (logits, rank.backend.sample(logits, choices + padding))
        }
        lastSampled = steps.map(\.tokens)
        let logits = steps[0].logits, vocabulary = logits.rowWidth
        let all = returnLogits.contains(true) ? model.ranks[0].backend.toHost(logits) : []
        return StepOutput(tokens: steps[0].tokens, logits: returnLogits.enumerated().map { row, wanted in
            wanted ? Array(all[row * vocabulary ..< (row + 1) * vocabulary]) : nil
        })
    }

    /// The step's logits from a recording, or nil to run it eagerly. A recording that fails turns recordings off.
    private func replayed(_ batch: StepBatch, fed: FedTokens?) -> Tensor? {
        do {
            return try recordings?.logits(batch, fed: fed)
        } catch {
            recordings = nil
            return nil
        }
    }
}
