/// A backend that can record the launches of one step and replay them (CUDA graphs): a decode step's hundreds of
/// small launches then cost one, and the host no longer paces the GPU.
///
/// A replay reads and writes exactly the buffers the recording did. So what varies between steps must live in
/// buffers that keep their address and are refilled in place: the plan (`fixedPlan` + `refill`) and the LoRA
/// tables (`LoRAProjection.update`, then `prepare` before a replay).
public protocol StepRecorder: Backend {
    /// A plan for batches of exactly `rows` rows, each its own sequence with at most `maxPages` pages and each a logit
    /// row (decode steps, padded), whose buffers keep their addresses. `withLoRA`: its steps run every projection's
    /// LoRA ops whatever the segments (`StepPlan.runsLoRA`), so one recording serves any adapters. `variant`: from
    /// `recordingVariant`.
    func fixedPlan(rows: Int, maxPages: Int, withLoRA: Bool, variant: Int) -> StepPlan
    /// How a decode step of `rows` rows at contexts up to `maxContext` is laid out beyond its size (on CUDA, the
    /// attention's key splits): steps of one variant share a recording.
    func recordingVariant(rows: Int, maxContext: Int, attention: AttentionShape) -> Int
    /// Puts `batch` (of the plan's shape) into the plan's buffers, in stream order.
    func refill(_ plan: StepPlan, with batch: StepBatch)
    /// Runs `body` once, recording what it launches instead of running it; tensors it allocates stay valid for the
    /// recording's replays. Throws when the device cannot record.
    func record(_ body: () -> Tensor) throws -> RecordedStep
    /// Brings the device tables of `projections` up to date; a replay reads them where they are.
    func prepare(_ projections: [LoRAProjection])
}

/// One recorded step.
public protocol RecordedStep: AnyObject {
    /// What the recorded body returned (the logits): each replay rewrites it.
    var output: Tensor { get }
    func replay()
}

extension StepBatch {
    /// The batch with `rows - rowCount` padding rows appended, each a one-token sequence at position 0 of page 0 (never
    /// handed out, so its writes harm no one) and a logit row: a decode batch at a recorded step's size.
    public func padded(toRows rows: Int) -> StepBatch {
        var padded = self
        for row in rowCount ..< rows {
            padded.tokens.append(0)
            padded.sequences.append(Sequence(rows: row ..< row + 1, contextLength: 1, blockTable: [0]))
            padded.logitRows.append(row)
        }
        return padded
    }

    /// Every sequence contributes one row and samples it, in row order: a step a recorded decode step can run.
    public var isDecodeOnly: Bool {
        sequences.allSatisfy { $0.rows.count == 1 } && logitRows == Array(0..<rowCount) && sequences.count == rowCount
    }
}
