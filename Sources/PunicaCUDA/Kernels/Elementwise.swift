/// Parameters of the kernels in elementwise.cu (see `KernelParameters`).
struct Embedding: KernelParameters {
    static let kernel = "embedding"
    var tokens: UInt64 = 0, table: UInt64 = 0, out: UInt64 = 0
    var width: Int32 = 0, firstToken: Int32 = 0, tableRows: Int32 = 0
}

struct CopyColumns: KernelParameters {
    static let kernel = "copy_columns"
    var from: UInt64 = 0, to: UInt64 = 0
    var width: Int32 = 0, toWidth: Int32 = 0, firstColumn: Int32 = 0
}

struct GatherRows: KernelParameters {
    static let kernel = "gather_rows"
    var x: UInt64 = 0, rows: UInt64 = 0, out: UInt64 = 0
    var width: Int32 = 0
}

struct RMSNorm: KernelParameters {
    static let kernel = "rms_norm"
    var x: UInt64 = 0, weight: UInt64 = 0, out: UInt64 = 0
    var width: Int32 = 0
    var eps: Float = 0
}

struct AddRMSNorm: KernelParameters {
    static let kernel = "add_rms_norm"
    var residual: UInt64 = 0, x: UInt64 = 0, weight: UInt64 = 0, out: UInt64 = 0
    var width: Int32 = 0
    var eps: Float = 0
}

struct SiluMul: KernelParameters {
    static let kernel = "silu_mul"
    var gateUp: UInt64 = 0, out: UInt64 = 0
    var halfWidth: Int32 = 0
}

struct GeluTanhMul: KernelParameters {
    static let kernel = "gelu_tanh_mul"
    var gateUp: UInt64 = 0, out: UInt64 = 0
    var halfWidth: Int32 = 0
}

struct Scale: KernelParameters {
    static let kernel = "scale"
    var x: UInt64 = 0
    var count: UInt64 = 0
    var factor: Float = 0
}

struct Softcap: KernelParameters {
    static let kernel = "softcap"
    var x: UInt64 = 0
    var count: UInt64 = 0
    var cap: Float = 0
}

struct AddBias: KernelParameters {
    static let kernel = "add_bias"
    var x: UInt64 = 0, bias: UInt64 = 0
    var width: Int32 = 0
}

struct HeadRMSNorm: KernelParameters {
    static let kernel = "head_rms_norm"
    var qkv: UInt64 = 0, queryWeight: UInt64 = 0, keyWeight: UInt64 = 0
    var qkvWidth: Int32 = 0, headDim: Int32 = 0, queryHeads: Int32 = 0
    var eps: Float = 0
}

struct RopeAppendKV: KernelParameters {
    static let kernel = "rope_append_kv"
    var qkv: UInt64 = 0, keys: UInt64 = 0, values: UInt64 = 0, positions: UInt64 = 0, rowSequence: UInt64 = 0, blockTables: UInt64 = 0
    var inverseFrequencies: UInt64 = 0
    var maxPages: Int32 = 0, pageSize: Int32 = 0, qkvWidth: Int32 = 0, queryHeads: Int32 = 0, kvHeads: Int32 = 0, headDim: Int32 = 0
    var headsPerBlock: Int32 = 0
    var scale: Float = 0
    /// ROPE_THREADS in elementwise.cu.
    static let threads = 128
    /// Heads a block takes: one 8-pair chunk per thread (the kernel's 16-byte path; a block loops over whatever it gets).
    static func headsPerBlock(headDim: Int) -> Int { max(1, threads * 8 / (headDim / 2)) }
}

struct ToFloat32: KernelParameters {
    static let kernel = "to_float32"
    var x: UInt64 = 0, out: UInt64 = 0
    var count: UInt64 = 0
}

struct FillUniform: KernelParameters {
    static let kernel = "fill_uniform"
    var out: UInt64 = 0
    var count: UInt64 = 0, seed: UInt64 = 0
    var scale: Float = 0
}
