/// Parameters of the kernels in lora.cu (see `KernelParameters`).
struct SGMVShrink: KernelParameters {
    static let kernel = "sgmv_shrink"
    var x: UInt64 = 0, v: UInt64 = 0, slots: UInt64 = 0, tileStart: UInt64 = 0, tileEnd: UInt64 = 0, tileSlot: UInt64 = 0
    var inWidth: Int32 = 0, vWidth: Int32 = 0, ranksPerBlock: Int32 = 0
}

struct SGMVExpand: KernelParameters {
    static let kernel = "sgmv_expand"
    var v: UInt64 = 0, y: UInt64 = 0, slots: UInt64 = 0, tileStart: UInt64 = 0, tileEnd: UInt64 = 0, tileSlot: UInt64 = 0
    var vWidth: Int32 = 0, yWidth: Int32 = 0
}
