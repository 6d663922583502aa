#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute

/// Decode steps recorded once per batch size and replayed (CUDA graphs), on a backend that can record
/// (`StepRecorder`). A decode-only batch runs as the smallest recorded size that holds it, padded with rows that
/// touch only page 0; any other step (prefill rows, more rows than the largest size, adapters wider than the
/// recordings' LoRA buffer) runs `forward` as usual. Each size is recorded twice: without LoRA ops, for steps no
/// row of which has an adapter, and with every projection's LoRA ops, for any adapters in any slots.
public final class RecordedDecodeSteps {
    /// Batch sizes recorded by default (as vLLM's capture sizes: every small size, sparser above).
    public static let defaultSizes = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256]

    private struct Key: Hashable {
        let rows: Int
        let withLoRA: Bool
        let loraWidth: Int
        let variant: Int
    }

    private let model: LlamaModel
    private let recorder: StepRecorder
    private let cache: KVCache
    private let adapters: ResidentAdapters
    public let sizes: [Int]
    private let maxPages: Int
    private var recorded: [Key: (plan: StepPlan, step: RecordedStep)] = [:]

    /// Device memory to set aside for recordings: each keeps its logits (a few variants of every size), and they share
    /// one step's buffers at the largest size.
    public static func reservedBytes(model: LlamaModel, sizes: [Int] = defaultSizes) -> Int {
        let largest = sizes.max() ?? 1
        return 8 * sizes.reduce(0, +) * model.config.vocabularySize * 2 + model.stepBytes(rows: largest, logitRows: largest, loraRank: 64)
    }

    /// nil when the model's backend cannot record. Block tables of up to `maxContext` tokens.
    public init?(model: LlamaModel, cache: KVCache, adapters: ResidentAdapters, maxContext: Int, sizes: [Int] = defaultSizes) {
        guard let recorder = model.backend as? StepRecorder else { return nil }
        self.model = model
        self.recorder = recorder
        self.cache = cache
        self.adapters = adapters
        self.sizes = sizes.sorted()
        maxPages = cache.layout.pagesNeeded(forTokens: maxContext)
    }

    /// Records every size with and without LoRA, for contexts up to `context`, now (start-up) rather than on first
    /// use; returns how many and how long it took.
    public func recordAll(context: Int) throws -> (count: Int, time: Duration) {
        let clock = ContinuousClock()
        let time = try clock.measure {
            for rows in sizes {
                let variant = recorder.recordingVariant(rows: rows, maxContext: context, attention: model.attention)
                for withLoRA in [false, true] { _ = try recording(Key(rows: rows, withLoRA: withLoRA, loraWidth: adapters.maxRank, variant: variant)) }
            }
        }
        return (recorded.count, time)
    }

    public var count: Int { recorded.count }

    /// Runs `batch` as a replay and returns its logits, one row per recorded row (the batch's rows first); nil when
    /// no recording can run it. `fed` rows take their tokens from the step before (`Backend.feed`).
    public func logits(_ batch: StepBatch, fed: FedTokens? = nil) throws -> Tensor? {
        guard batch.isDecodeOnly, let rows = sizes.first(where: { $0 >= batch.rowCount }),
              batch.sequences.allSatisfy({ $0.blockTable.count <= maxPages }) else { return nil }
        let context = batch.sequences.map(\.contextLength).max() ?? 1
        let key = Key(rows: rows, withLoRA: !batch.loraSegments.isEmpty, loraWidth: adapters.maxRank,
                      variant: recorder.recordingVariant(rows: rows, maxContext: context, attention: model.attention))
        let (plan, step) = try recording(key)
        recorder.refill(plan, with: batch.padded(toRows: rows))
        if let fed { model.backend.feed(fed, plan: plan) }
        if key.withLoRA { recorder.prepare(adapters.allProjections) }
        step.replay()
        return step.output
    }

    private func recording(_ key: Key) throws -> (plan: StepPlan, step: RecordedStep) {
        if let existing = recorded[key] { return existing }
        let plan = recorder.fixedPlan(rows: key.rows, maxPages: maxPages, withLoRA: key.withLoRA, variant: key.variant)
        // A valid batch of the plan's shape (padding only) so the recording's launches see sane metadata.
        recorder.refill(plan, with: StepBatch(tokens: [], sequences: [], loraSegments: [], logitRows: []).padded(toRows: key.rows))
        if key.withLoRA { recorder.prepare(adapters.allProjections) }
        let step = try recorder.record { model.forward(plan, cache: cache, adapters: adapters) }
        recorded[key] = (plan, step)
        return (plan, step)
    }
}
