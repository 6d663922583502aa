/// Parameters of the kernels in attention.cu (see `KernelParameters`).
struct PagedAttention: KernelParameters {
    static let kernel = "paged_attention"
    var qkv: UInt64 = 0, keys: UInt64 = 0, values: UInt64 = 0, positions: UInt64 = 0, rowSequence: UInt64 = 0, blockTables: UInt64 = 0
    var out: UInt64 = 0, partialAcc: UInt64 = 0, partialMaxSum: UInt64 = 0
    var maxPages: Int32 = 0, qkvWidth: Int32 = 0, queryHeads: Int32 = 0, kvHeads: Int32 = 0, headDim: Int32 = 0, pageSize: Int32 = 0
    var slidingWindow: Int32 = 0
    var scale: Float = 0
}

struct AttentionMerge: KernelParameters {
    static let kernel = "attention_merge"
    var partialAcc: UInt64 = 0, partialMaxSum: UInt64 = 0, out: UInt64 = 0
    var queryHeads: Int32 = 0, headDim: Int32 = 0, splits: Int32 = 0
}
