/// Parameters of the kernels in sampling.cu (see `KernelParameters`).
struct AdjustLogits: KernelParameters {
    static let kernel = "adjust_logits"
    var logits: UInt64 = 0, offsets: UInt64 = 0, adjustments: UInt64 = 0
    var vocab: Int32 = 0
}

struct SampleRows: KernelParameters {
    static let kernel = "sample_rows"
    var logits: UInt64 = 0, params: UInt64 = 0, out: UInt64 = 0
    var vocab: Int32 = 0
}

struct FeedTokens: KernelParameters {
    static let kernel = "feed_tokens"
    var sampled: UInt64 = 0, pairs: UInt64 = 0
    var count: Int32 = 0
    var tokens: UInt64 = 0
}
