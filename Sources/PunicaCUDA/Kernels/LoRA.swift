/// Parameters of the kernels in lora.cu (see `KernelParameters`).
struct SGMVShrink: KernelParameters {
    static let kernel = "sgmv_shrink"
    var x: UInt64 = 0, v: UInt64 = 0, slots: UInt64 = 0, tileStart: UInt64 = 0, tileEnd: UInt64 = 0, tileSlot: UInt64 = 0
    var inWidth: Int32 = 0, vWidth: Int32 = 0, ranksPerBlock: Int32 = 0
}

struct SGMVShrinkMMA: KernelParameters {
    static let kernel = "sgmv_shrink_mma"
    /// MMA_TILE_ROWS, MMA_RANKS and MMA_K in lora.cu: rows of a tile, ranks of a block, input columns per step.
    static let tileRows = 64, rankChunk = 64, kStep = 32
    var x: UInt64 = 0, v: UInt64 = 0, slots: UInt64 = 0, tileStart: UInt64 = 0, tileEnd: UInt64 = 0, tileSlot: UInt64 = 0
    var inWidth: Int32 = 0, vWidth: Int32 = 0, kSplit: Int32 = 0
}

struct SGMVExpand: KernelParameters {
    static let kernel = "sgmv_expand"
    /// EXPAND_ROWS in lora.cu: tile rows per block.
    static let rowsPerBlock = 4
    var v: UInt64 = 0, y: UInt64 = 0, slots: UInt64 = 0, tileStart: UInt64 = 0, tileEnd: UInt64 = 0, tileSlot: UInt64 = 0
    var vWidth: Int32 = 0, yWidth: Int32 = 0
}
