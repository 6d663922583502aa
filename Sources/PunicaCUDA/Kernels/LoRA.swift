/// Parameters of the kernels in lora.cu (see `KernelParameters`).
///
/// The CUDA-core shrink and the expand each have two entry points sharing one parameter list, for tiles of one row
/// and for longer tiles: `SGMVShrink<Rows>` and `SGMVExpand<Rows>`, the `SGMVTileRows` type saying which.
struct SGMVShrink<Rows: SGMVTileRows>: KernelParameters {
    static var kernel: String { "sgmv_shrink" + Rows.suffix }
    /// SHRINK_RANKS and SHRINK_THREADS in lora.cu: rank rows and threads of a block.
    static var ranksPerBlock: Int { 4 }
    static var threads: Int { 256 }
    var x: UInt64 = 0, v: UInt64 = 0, slots: UInt64 = 0, tileStart: UInt64 = 0, tileEnd: UInt64 = 0, tileSlot: UInt64 = 0
    var inWidth: Int32 = 0, vWidth: Int32 = 0
}

struct SGMVExpand<Rows: SGMVTileRows>: KernelParameters {
    static var kernel: String { "sgmv_expand" + Rows.suffix }
    var v: UInt64 = 0, y: UInt64 = 0, slots: UInt64 = 0, tileStart: UInt64 = 0, tileEnd: UInt64 = 0, tileSlot: UInt64 = 0
    var vWidth: Int32 = 0, yWidth: Int32 = 0
}

protocol SGMVTileRows {
    /// The entry point's name after "sgmv_shrink" / "sgmv_expand".
    static var suffix: String { get }
    /// Tile rows a block takes at a time (the template argument of shrink_tile and expand_tile).
    static var rows: Int { get }
}

/// Every tile one row: decode steps, recorded steps.
enum SGMVOneRow: SGMVTileRows {
    static let suffix = "_row", rows = 1
}

enum SGMVFourRows: SGMVTileRows {
    static let suffix = "", rows = 4
}

struct SGMVShrinkMMA: KernelParameters {
    static let kernel = "sgmv_shrink_mma"
    /// MMA_TILE_ROWS, MMA_RANKS and SHRINK_MMA_K in lora.cu: rows of a tile, ranks of a block, input columns per step.
    static let tileRows = 64, rankChunk = 64, kStep = 64
    var x: UInt64 = 0, v: UInt64 = 0, slots: UInt64 = 0, tileStart: UInt64 = 0, tileEnd: UInt64 = 0, tileSlot: UInt64 = 0
    var inWidth: Int32 = 0, vWidth: Int32 = 0, kSplit: Int32 = 0
}

struct SGMVExpandMMA: KernelParameters {
    static let kernel = "sgmv_expand_mma"
    /// EXPAND_COLUMNS in lora.cu: output columns of a block (of 16 rows of one of the tensor-core shrink's tiles).
    static let columns = 128
    var v: UInt64 = 0, y: UInt64 = 0, slots: UInt64 = 0, tileStart: UInt64 = 0, tileEnd: UInt64 = 0, tileSlot: UInt64 = 0
    var vWidth: Int32 = 0, yWidth: Int32 = 0
}
