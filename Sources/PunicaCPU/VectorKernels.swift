#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute
import PunicaCPUKernels

/// The inner loops of the CPU backend's hot ops — dot products (decode GEMV/GEMM, LoRA shrink, attention scores,
/// RMSNorm), axpy (LoRA expand, attention values) and the packed GEMM's micro-kernel — in one table per variant:
/// C variants for AVX-512, AVX2+FMA, NEON and the baseline (PunicaCPUKernels), chosen once at start-up from cpuid,
/// plus a plain Swift reference the tests hold every variant to. The package itself targets baseline x86-64, so
/// the same binary runs on any x86-64 CPU.
struct VectorKernels: @unchecked Sendable {
    typealias Dot = @convention(c) (UnsafePointer<Float>?, UnsafePointer<Float>?, Int) -> Float
    typealias DotBF16 = @convention(c) (UnsafePointer<Float>?, UnsafePointer<UInt16>?, Int) -> Float
    typealias Gemv = @convention(c) (UnsafePointer<Float>?, UnsafePointer<Float>?, Int, Int, Int, UnsafeMutablePointer<Float>?) -> Void
    typealias GemvBF16 = @convention(c) (UnsafePointer<Float>?, UnsafePointer<UInt16>?, Int, Int, Int,
                                         UnsafeMutablePointer<Float>?) -> Void
    typealias Gemv8 = @convention(c) (UnsafePointer<Float>?, Int, Int, UnsafePointer<Float>?, Int, Int, Int,
                                      UnsafeMutablePointer<Float>?) -> Void
    typealias Gemv8BF16 = @convention(c) (UnsafePointer<Float>?, Int, Int, UnsafePointer<UInt16>?, Int, Int, Int,
                                          UnsafeMutablePointer<Float>?) -> Void
    typealias Axpy = @convention(c) (Int, Float, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?) -> Void
    typealias AxpyRows = @convention(c) (Int, Int, UnsafePointer<Float>?, UnsafePointer<Float>?, Int, UnsafeMutablePointer<Float>?) -> Void
    typealias AxpyRowsBF16 = @convention(c) (Int, Int, UnsafePointer<Float>?, UnsafePointer<UInt16>?, Int,
                                             UnsafeMutablePointer<Float>?) -> Void
    typealias Tile4x8 = @convention(c) (Int, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                        UnsafeMutablePointer<Float>?) -> Void
    typealias GatedActivation = @convention(c) (Int, UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?) -> Void
    typealias ExpShifted = @convention(c) (Int, UnsafeMutablePointer<Float>?, Float) -> Float
    typealias GemmNT = @convention(c) (Int, Int, Int, Float, UnsafePointer<Float>?, Int, UnsafePointer<Float>?, Int, Float,
                                       UnsafeMutablePointer<Float>?, Int) -> Void

    let name: String
    /// Σ x[i]·y[i] over `count` elements.
    let dot: Dot
    /// `dot` with y in bfloat16 (a decode row's GEMV over bfloat16 weights).
    let dotBF16: DotBF16
    /// y[j] = x · w[j·ldw ..< +count] for j < rows: (x, w, ldw, rows, count, y), one call per block of weight rows.
    let gemv: Gemv
    /// `gemv` with w in bfloat16.
    let gemvBF16: GemvBF16
    /// y[r·count + j] = x[r·ldx ..< +n] · w[j·ldw ..< +n] for r < rows (1...8), j < count: (x, ldx, rows, w, ldw,
    /// count, n, y), one call per block of weight rows, each read once for all of x's rows.
    let gemv8: Gemv8
    /// `gemv8` with w in bfloat16.
    let gemv8BF16: Gemv8BF16
    /// y[i] += a·x[i] over `count` elements: (count, a, x, y).
    let axpy: Axpy
    /// y[i] += Σ_p a[p]·x[p·ldx + i] for p < rows: (count, rows, a, x, ldx, y), in the order of `rows` axpy calls.
    let axpyRows: AxpyRows
    /// `axpyRows` with x in bfloat16 (a bfloat16 KV cache's values).
    let axpyRowsBF16: AxpyRowsBF16
    /// tile[4][8] = Σ_p a[p][0..<4] ⊗ b[p][0..<8]: (depth, a, b, tile).
    let tile4x8: Tile4x8
    /// y[r·ldy + j] = alpha·(x[r·ldx ..< +k] · w[j·ldw ..< +k]) + beta·y[r·ldy + j] for r < m, j < n: (m, n, k, alpha,
    /// x, ldx, w, ldw, beta, y, ldy), y = x·wᵀ without packing; y is not read when beta == 0.
    let gemmNT: GemmNT
    /// out[i] = silu(gate[i])·up[i]: (count, gate, up, out).
    let siluMul: GatedActivation
    /// out[i] = gelu_tanh(gate[i])·up[i]: (count, gate, up, out).
    let geluTanhMul: GatedActivation
    /// x[i] = exp(x[i] − shift), returning Σ x[i]: (count, x, shift).
    let expShifted: ExpShifted

    /// Whether `gemmNT` runs a layer's x·Wᵀ faster than OpenBLAS's sgemm on the cores that run this variant, so `GEMM`
    /// takes it even when BLAS is loaded. Measured for AVX-512 (docs/PERFORMANCE.md); other variants defer to BLAS.
    var gemmNTBeatsBLAS: Bool { name == "avx512" }

    /// Every variant this machine runs, best first, then the Swift reference.
    static let supported: [VectorKernels] = {
        var count = 0
        let list = punica_kernels_supported(&count)!
        return (0..<count).map { VectorKernels(list[$0]!.pointee) } + [reference]
    }()

    /// The variant in use: `PUNICA_CPU_KERNELS` (a name from `supported`) or else the best one.
    static let active: VectorKernels = {
        guard let requested = ProcessInfo.processInfo.environment["PUNICA_CPU_KERNELS"], !requested.isEmpty else {
            return supported[0]
        }
        guard let chosen = supported.first(where: { $0.name == requested }) else {
            fatalError("PUNICA_CPU_KERNELS=\(requested): this CPU runs \(supported.map(\.name).joined(separator: ", "))")
        }
        return chosen
    }()

    private init(name: String, dot: Dot, dotBF16: DotBF16, gemv: Gemv, gemvBF16: GemvBF16, gemv8: Gemv8, gemv8BF16: Gemv8BF16,
                 axpy: Axpy, axpyRows: AxpyRows, axpyRowsBF16: AxpyRowsBF16, tile4x8: Tile4x8, gemmNT: GemmNT, siluMul: GatedActivation,
                 geluTanhMul: GatedActivation, expShifted: ExpShifted) {
        (self.name, self.dot, self.dotBF16, self.gemv, self.gemvBF16, self.gemv8, self.gemv8BF16, self.axpy, self.axpyRows,
         self.axpyRowsBF16, self.tile4x8, self.gemmNT, self.siluMul, self.geluTanhMul, self.expShifted) =
            (name, dot, dotBF16, gemv, gemvBF16, gemv8, gemv8BF16, axpy, axpyRows, axpyRowsBF16, tile4x8, gemmNT, siluMul, geluTanhMul,
             expShifted)
    }

    private init(_ table: punica_kernels) {
        self.init(name: String(cString: table.name), dot: table.dot, dotBF16: table.dot_bf16, gemv: table.gemv,
                  gemvBF16: table.gemv_bf16, gemv8: table.gemv8,
                  gemv8BF16: table.gemv8_bf16, axpy: table.axpy, axpyRows: table.axpy_rows,
                  axpyRowsBF16: table.axpy_rows_bf16, tile4x8: table.tile4x8,
                  gemmNT: table.gemm_nt, siluMul: table.silu_mul, geluTanhMul: table.gelu_tanh_mul, expShifted: table.exp_shifted)
    }
}

// MARK: - Swift reference

extension VectorKernels {
    /// Plain loops in the order a reader would write them.
    static let reference = VectorKernels(
        name: "swift",
        dot: { x, y, count in
            var sum: Float = 0
            for i in 0..<count { sum += x![i] * y![i] }
            return sum
        },
        dotBF16: { x, y, count in
            var sum: Float = 0
            for i in 0..<count { sum += x![i] * HalfConversion.float(bfloat16: y![i]) }
            return sum
        },
        gemv: { x, w, ldw, rows, count, y in
            for j in 0..<rows {
                var sum: Float = 0
                for i in 0..<count { sum += x![i] * w![j * ldw + i] }
                y![j] = sum
            }
        },
        gemvBF16: { x, w, ldw, rows, count, y in
            for j in 0..<rows {
                var sum: Float = 0
                for i in 0..<count { sum += x![i] * HalfConversion.float(bfloat16: w![j * ldw + i]) }
                y![j] = sum
            }
        },
        gemv8: { x, ldx, rows, w, ldw, count, n, y in
            for r in 0..<rows {
                for j in 0..<count {
                    var sum: Float = 0
                    for i in 0..<n { sum += x![r * ldx + i] * w![j * ldw + i] }
                    y![r * count + j] = sum
                }
            }
        },
        gemv8BF16: { x, ldx, rows, w, ldw, count, n, y in
            for r in 0..<rows {
                for j in 0..<count {
                    var sum: Float = 0
                    for i in 0..<n { sum += x![r * ldx + i] * HalfConversion.float(bfloat16: w![j * ldw + i]) }
                    y![r * count + j] = sum
                }
            }
        },
        axpy: { count, a, x, y in
            for i in 0..<count { y![i] += a * x![i] }
        },
        axpyRows: { count, rows, a, x, ldx, y in
            for p in 0..<rows {
                for i in 0..<count { y![i] += a![p] * x![p * ldx + i] }
            }
        },
        axpyRowsBF16: { count, rows, a, x, ldx, y in
            for p in 0..<rows {
                for i in 0..<count { y![i] += a![p] * HalfConversion.float(bfloat16: x![p * ldx + i]) }
            }
        },
        tile4x8: { depth, a, b, tile in
            for r in 0..<4 {
                for j in 0..<8 {
                    var sum: Float = 0
                    for p in 0..<depth { sum += a![p * 4 + r] * b![p * 8 + j] }
                    tile![r * 8 + j] = sum
                }
            }
        },
        gemmNT: { m, n, k, alpha, x, ldx, w, ldw, beta, y, ldy in
            for r in 0..<m {
                for j in 0..<n {
                    var sum: Float = 0
                    for p in 0..<k { sum += x![r * ldx + p] * w![j * ldw + p] }
                    y![r * ldy + j] = alpha * sum + (beta == 0 ? 0 : beta * y![r * ldy + j])
                }
            }
        },
        siluMul: { count, gate, up, out in
            for i in 0..<count { out![i] = gate![i] / (1 + exp(-gate![i])) * up![i] }
        },
        geluTanhMul: { count, gate, up, out in
            // ½·x·(1 + tanh z) written as x / (1 + e^−2z): the same value, without cancelling where tanh z ≈ −1.
            let root2OverPi = Float(2 / Double.pi).squareRoot()
            for i in 0..<count {
                let x = gate![i]
                out![i] = x / (1 + exp(-2 * root2OverPi * (x + 0.044715 * x * x * x))) * up![i]
            }
        },
        expShifted: { count, x, shift in
            var total: Float = 0
            for i in 0..<count {
                x![i] = exp(x![i] - shift)
                total += x![i]
            }
            return total
        }
    )
}
