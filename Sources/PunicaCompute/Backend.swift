/// A step's `StepBatch` as one backend's ops read it: built and uploaded once per step, reused by every layer.
public protocol StepPlan: AnyObject {
    var batch: StepBatch { get }
    /// Whether a projection's LoRA ops run this step: where some row has an adapter and the projection has an
    /// adapter in some slot, or always for a recorded step's plan (its segments change from replay to replay).
    func runsLoRA(_ projection: LoRAProjection) -> Bool
}

extension StepPlan {
    public func runsLoRA(_ projection: LoRAProjection) -> Bool { !batch.loraSegments.isEmpty && !projection.isEmpty }
}

/// Head layout of a grouped-query attention layer.
public struct AttentionShape: Sendable, Hashable {
    public let queryHeads: Int
    public let kvHeads: Int
    public let headDim: Int
    /// Keys further back than this many positions are masked (Mistral); nil attends to the whole context.
    public let slidingWindow: Int?
    /// Scores are q·k times this: 1/√headDim, or Gemma 2's 1/√query_pre_attn_scalar.
    public let scale: Float
    /// Scores become softcap · tanh(score / softcap) before the softmax (Gemma 2); nil leaves them as they are.
    public let softcap: Float?

    public init(queryHeads: Int, kvHeads: Int, headDim: Int, slidingWindow: Int? = nil, scale: Float? = nil, softcap: Float? = nil) {
        precondition(queryHeads % kvHeads == 0, "query heads must be a multiple of KV heads")
        self.queryHeads = queryHeads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.slidingWindow = slidingWindow
        self.scale = scale ?? 1 / Float(headDim).squareRoot()
        self.softcap = softcap
    }

    public var queryWidth: Int { queryHeads * headDim }
    public var kvWidth: Int { kvHeads * headDim }
    /// Width of a fused q|k|v row.
    public var qkvWidth: Int { queryWidth + 2 * kvWidth }
    public var groupSize: Int { queryHeads / kvHeads }
}

/// One layer's paged KV cache: `keys` and `values` are each [pageCount, pageSize, kvHeads, headDim].
public struct KVCacheLayer {
    public let keys: Tensor
    public let values: Tensor

    public init(keys: Tensor, values: Tensor) {
        self.keys = keys
        self.values = values
    }
}

/// What the ranks of a model split by tensor parallelism (`Shard`) do together. Every rank calls the same collectives
/// in the same order, each with tensors of its own backend of the same shape, as NCCL requires.
public protocol Collectives: AnyObject {
    /// x becomes the elementwise sum of every rank's x, added in rank order (so every rank holds the same values).
    func allReduceSum(_ x: Tensor)
    /// out [rows, Σ widths] becomes every rank's `part` [rows, widths[rank]] side by side, in rank order.
    func allGatherColumns(_ part: Tensor, widths: [Int], into out: Tensor)
}

/// The operations the model is written against. Each has a CPU reference (PunicaCPU) that defines its meaning and
/// that every other backend is tested against. Activations are [T, width] with one row per token of the step.
public protocol Backend: AnyObject {
    var name: String { get }

    // MARK: Memory

    /// A tensor of zeros in the backend's activation type.
    func zeros(_ shape: [Int]) -> Tensor
    /// The KV cache's element type: the activation type, or a narrower one the backend was asked for.
    var kvCacheDType: DType { get }
    /// Zeros of `kvCacheDType` for the KV cache, which lives as long as the model: allocated exactly, not from the
    /// pool steps recycle.
    func kvCacheZeros(_ shape: [Int]) -> Tensor
    /// Float32 zeros on every backend, for intermediates that need the precision (LoRA's shrink output).
    func float32Zeros(_ shape: [Int]) -> Tensor
    /// Float32 values that stay float32 on every backend (RoPE's inverse frequencies).
    func float32(_ values: [Float], shape: [Int]) -> Tensor
    /// Copies checkpoint data (`dtype` elements, row-major `shape`) into a weight tensor; the backend picks the
    /// storage type. The source need not be aligned.
    func weight(from source: UnsafeRawPointer, dtype: DType, shape: [Int]) -> Tensor
    /// The storage type of `weight(from:)`'s tensors: adapters are converted to it on the host, then uploaded as is.
    var weightDType: DType { get }
    /// Host memory for data on its way to the device (an adapter converted for upload). Callable from any thread;
    /// throws when the memory cannot be had.
    func hostBuffer(bytes: Int) throws -> HostBuffer
    /// One device allocation holding `slab`'s bytes (`weightDType` elements), one copy, viewed as tensors at the given
    /// element offsets: an adapter's weights. The copy is ordered before every later op; `slab` may go right after.
    /// Where tensors live in host memory (the CPU), the views are of the slab itself, which they keep alive.
    func weights(slab: HostBuffer, views: [(offset: Int, shape: [Int])]) -> [Tensor]
    /// A weight of values uniform in [-scale, scale), reproducible from `seed` on one backend (the values differ
    /// between backends): random models for benchmarks.
    func randomWeight(shape: [Int], scale: Float, seed: UInt64) -> Tensor
    /// Concatenates weights along their first dimension (fusing q|k|v or gate|up into one matrix).
    func concatenateRows(_ parts: [Tensor]) -> Tensor
    /// Returns the tensor's elements as float32 on the host.
    func toHost(_ tensor: Tensor) -> [Float]
    func plan(_ batch: StepBatch) -> StepPlan
    /// Throws, naming the limit, when the backend's attention cannot run this head layout (checked once, at model load).
    func checkSupported(_ attention: AttentionShape) throws
    /// Free and total bytes of the device's memory; nil where tensors live in host memory (the CPU).
    func deviceMemory() -> (free: Int, total: Int)?

    // MARK: Ops

    /// Semantics: out[t, :] = table[tokens[t] - firstToken, :], or zeros where that row is not in the table (a rank's
    /// part of a vocabulary split by tensor parallelism, whose other rows other ranks hold). table: [vocab part, H],
    /// out: [T, H].
    func embedding(table: Tensor, firstToken: Int, plan: StepPlan, out: Tensor)

    /// Semantics: out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + epsilon) * weight. x, out: [T, H], weight: [H].
    func rmsNorm(x: Tensor, weight: Tensor, epsilon: Float, out: Tensor)

    /// Semantics: residual += x, then out = rmsNorm(residual). The residual add fused into the norm.
    func addRMSNorm(residual: Tensor, x: Tensor, weight: Tensor, epsilon: Float, out: Tensor)

    /// Semantics: out[T, N] = x[T, K] · weight[N, K]ᵀ (weights stored as nn.Linear stores them).
    func matmul(x: Tensor, weight: Tensor, out: Tensor)

    /// Semantics: x[t, :] += bias in place (a linear layer's bias, Qwen2's q|k|v). x: [T, N], bias: [N].
    func addBias(x: Tensor, bias: Tensor)

    /// Semantics: each q head and each k head of every fused q|k|v row, in place, becomes
    /// head / sqrt(mean(head²) + epsilon) * weight, q heads with `queryWeight` and k heads with `keyWeight` (Qwen3's
    /// q_norm and k_norm, before RoPE). v is left as it is. qkv: [T, qkvWidth], weights: [headDim].
    func headRMSNorm(qkv: Tensor, shape: AttentionShape, queryWeight: Tensor, keyWeight: Tensor, epsilon: Float)

    /// Semantics: rotates the q and k heads of each fused q|k|v row in place by its position (rotate-half layout,
    /// as HF Llama): for head dims i < d/2, angle = position * inverseFrequencies[i], cos = scale·cos(angle),
    /// sin = scale·sin(angle) (`scale`: LongRoPE's attention factor, else 1),
    /// (x[i], x[i + d/2]) ← (x[i]·cos − x[i + d/2]·sin, x[i + d/2]·cos + x[i]·sin); then writes the rotated k heads
    /// and the v heads of every row into the cache slot of its position (`PageLayout`). One op, so a GPU passes over
    /// each row once. qkv: [T, qkvWidth].
    func ropeAppendKV(qkv: Tensor, shape: AttentionShape, inverseFrequencies: Tensor, scale: Float, cache: KVCacheLayer,
                      layout: PageLayout, plan: StepPlan)

    /// Semantics: causal grouped-query attention of each row's q heads over its sequence's cached keys and values
    /// at positions ≤ its own (and within the sliding window), softmax(cap(q·kᵀ · shape.scale))·v, cap(s) =
    /// softcap · tanh(s / softcap) where the shape has a softcap and s otherwise. Query head h reads KV head
    /// h / groupSize. qkv: [T, qkvWidth], out: [T, queryWidth].
    func attention(qkv: Tensor, shape: AttentionShape, cache: KVCacheLayer, layout: PageLayout, plan: StepPlan, out: Tensor)

    /// Semantics: out[t, i] = silu(gateUp[t, i]) * gateUp[t, I + i]. gateUp: [T, 2I], out: [T, I].
    func siluMul(gateUp: Tensor, out: Tensor)

    /// Semantics: out[t, i] = gelu_tanh(gateUp[t, i]) * gateUp[t, I + i] (Gemma's GeGLU), gelu_tanh(x) =
    /// x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))). gateUp: [T, 2I], out: [T, I].
    func geluTanhMul(gateUp: Tensor, out: Tensor)

    /// Semantics: x *= factor in place (Gemma's embedding × √hidden). x: any shape.
    func scale(_ x: Tensor, by factor: Float)

    /// Semantics: x = cap · tanh(x / cap) in place (Gemma 2's final logit soft-capping). x: any shape.
    func softcap(_ x: Tensor, cap: Float)

    /// SGMV shrink. Semantics: for each LoRA segment (rows, slot) whose adapter targets this projection,
    /// v[rows, 0..<rank] = x[rows] · A[slot]ᵀ. Other rows of v are left as they are. x: [T, in], v: [T, ≥ max rank].
    /// It may run beside the ops issued after it, up to the next loraExpand or host read, which see v complete: those
    /// ops must not write x or v.
    func loraShrink(x: Tensor, projection: LoRAProjection, plan: StepPlan, v: Tensor)

    /// SGMV expand. Semantics: for each LoRA segment (rows, slot) whose adapter targets this projection and each of
    /// its pieces, y[rows, outputOffset ..< +out] += v[rows, rankOffset ..< +r] · B[slot]ᵀ. y: [T, out total].
    func loraExpand(v: Tensor, projection: LoRAProjection, plan: StepPlan, y: Tensor)

    /// Semantics: the input token of each row `fed.rows[i].row` of the plan becomes `fed.source.ids[fed.rows[i].index]`,
    /// a negative id (`TokenChoice.nonFinite`) becoming 0, without waiting for the ids to reach the host. Before the
    /// step's first op.
    func feed(_ fed: FedTokens, plan: StepPlan)

    /// Semantics: out[i, :] = x[batch.logitRows[i], :]. out: [logitRows.count, H].
    func gatherLogitRows(x: Tensor, plan: StepPlan, out: Tensor)

    /// Semantics: `choices[i].pick` of each row (greedy, temperature, top-k, top-p, repetition penalty): sampling
    /// where the logits are, so only token ids reach the host. A row whose penalized logits hold a NaN or +∞, or are
    /// all −∞, gives `TokenChoice.nonFinite` (-1) instead of a token, on every backend; the caller ends that row's
    /// request and the other rows are unaffected. logits: [rows, vocab]; the tensor is left unchanged. Returns at
    /// once where the device runs behind the host; reading the ids waits for them.
    func sample(_ logits: Tensor, _ choices: [TokenChoice]) -> SampledTokens
}
