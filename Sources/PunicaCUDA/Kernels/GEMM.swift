/// Parameters of the kernels in gemm.cu (see `KernelParameters`).
///
/// The three skinny GEMM kernels share one parameter list; `SkinnyGEMMRows` says which entry point by the rows it
/// computes (16, 32 or 64: one, two or four 16-row mma blocks).
struct SkinnyGEMM<Rows: SkinnyGEMMRows>: KernelParameters {
    static var kernel: String { Rows.name }
    var x: UInt64 = 0, w: UInt64 = 0, y: UInt64 = 0, partials: UInt64 = 0, counters: UInt64 = 0
    var m: Int32 = 0, n: Int32 = 0, k: Int32 = 0, kSplit: Int32 = 0

    /// GEMM_COLUMNS and GEMM_K in gemm.cu: output columns per block, input columns per step.
    static var columns: Int { 64 }
    static var kStep: Int { 64 }
    /// STAGES (4) steps of (GEMM_COLUMNS weight rows + the kernel's rows) × GEMM_STRIDE scalars.
    static func sharedBytes(scalarBytes: Int) -> Int { 4 * (columns + Rows.rows) * (kStep + 8) * scalarBytes }
}

protocol SkinnyGEMMRows {
    static var name: String { get }
    static var rows: Int { get }
}

enum SkinnyRows16: SkinnyGEMMRows { static let name = "skinny_gemm16", rows = 16 }
enum SkinnyRows32: SkinnyGEMMRows { static let name = "skinny_gemm32", rows = 32 }
enum SkinnyRows64: SkinnyGEMMRows { static let name = "skinny_gemm64", rows = 64 }
