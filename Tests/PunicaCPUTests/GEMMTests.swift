import PunicaCompute
import Testing
import TestSupport
@testable import PunicaCPU

/// Implementations under test: the built-in one with every kernel variant this CPU runs (the Swift reference
/// included), plus BLAS when a library is installed.
private let implementations: [GEMM.Implementation] = VectorKernels.supported.map(GEMM.Implementation.builtin)
    + (BLAS.library.map { [.blas($0)] } ?? [])

extension GEMM.Implementation: CustomTestStringConvertible {
    public var testDescription: String {
        switch self {
        case .builtin(let kernels): "built-in \(kernels.name)"
        case .blas(let library): "blas \(library.name)"
        }
    }
}

/// One sgemm call. `padding` extra elements at the end of every row of A, B and C make each leading dimension larger
/// than its row (C's padding must come back untouched).
private struct Problem: Sendable, CustomTestStringConvertible {
    var m: Int, n: Int, k: Int
    var transA = false, transB = true
    var padding = 0
    var alpha: Float = 1, beta: Float = 0

    var testDescription: String {
        "\(m)×\(n)×\(k) \(transA ? "T" : "N")\(transB ? "T" : "N") pad \(padding) alpha \(alpha) beta \(beta)"
    }
}

/// Every transpose combination of each shape, once plain (beta = 0, so C starts as NaN) and once with padded rows,
/// alpha and beta ≠ 1. Shapes cover 1×1×1, the skinny decode product (m ≤ 8, k not a multiple of the SIMD width),
/// odd sizes, exact micro-tiles, and n = 1.
private let shapes = [(1, 1, 1), (1, 8, 19), (1, 37, 300), (7, 13, 29), (65, 129, 33), (8, 16, 64), (13, 1, 40)]
private let problems: [Problem] = shapes.flatMap { m, n, k in
    [(false, false), (false, true), (true, false), (true, true)].flatMap { transA, transB in
        [Problem(m: m, n: n, k: k, transA: transA, transB: transB),
         Problem(m: m, n: n, k: k, transA: transA, transB: transB, padding: 3, alpha: 1.5, beta: -0.5)]
    }
}

/// Products big enough to be split over threads (the skinny decode product over rows of W; the packed product over
/// columns, or over rows when C is too narrow), larger than one cache block in each dimension (m > mc, k > kc,
/// n > nc per thread), a skinny product of more than one group of rows, and the edge cases of k and alpha.
private let largeAndEdgeProblems: [Problem] = [
    Problem(m: 1, n: 4001, k: 520),
    Problem(m: 1, n: 4001, k: 520, transA: true, alpha: 1.5, beta: -0.5),
    Problem(m: 6, n: 701, k: 517, padding: 5, alpha: 0.5, beta: 0.25),
    Problem(m: 100, n: 40, k: 600, beta: 0.5),
    Problem(m: 300, n: 77, k: 1500, padding: 2, alpha: 1.5, beta: -0.5),  // x·Wᵀ over two row blocks and two k slices
    Problem(m: 100, n: 40, k: 600, transA: true, transB: false, padding: 1, alpha: 0.25),
    Problem(m: 9, n: 1100, k: 220, transB: false, beta: 0.5),
    Problem(m: 2100, n: 5, k: 200, transA: true, padding: 2, alpha: 2, beta: 1),
    Problem(m: 5, n: 9, k: 0, beta: 0.5),
    Problem(m: 5, n: 9, k: 0),
    Problem(m: 5, n: 9, k: 7, alpha: 0, beta: 2),
]

@Test(arguments: implementations, problems + largeAndEdgeProblems)
private func sgemmMatchesReference(implementation: GEMM.Implementation, problem: Problem) {
    #expect(mismatch(problem, implementation) == nil)
}

@Test(arguments: ["/nonexistent/libopenblas.so", "libc.so.6"])  // missing; present but without cblas_sgemm
func unusableBLASLibraryIsReportedWithItsPath(path: String) {
    let error = #expect(throws: BLAS.LoadError.self) { try BLAS.load(path: path) }
    #expect(error?.description.contains(path) == true)
}

/// Runs `problem` on seeded random inputs and compares C with a plain triple loop in Double.
/// Returns nil on a match, else `closeMismatch`'s report. The tolerance grows with k, the length of each sum.
private func mismatch(_ problem: Problem, _ implementation: GEMM.Implementation) -> String? {
    let (m, n, k) = (problem.m, problem.n, problem.k)
    var random = SplitMix64(seed: UInt64(m * 1_000_003 + n * 1009 + k))
    let (aRows, aColumns) = problem.transA ? (k, m) : (m, k)
    let (bRows, bColumns) = problem.transB ? (n, k) : (k, n)
    let lda = max(1, aColumns) + problem.padding, ldb = max(1, bColumns) + problem.padding
    let ldc = n + problem.padding
    let a = random.floats(max(1, aRows * lda)), b = random.floats(max(1, bRows * ldb))
    var c = random.floats(m * ldc)
    if problem.beta == 0 {  // C must not be read: poison it
        for i in 0 ..< m { for j in 0 ..< n { c[i * ldc + j] = .nan } }
    }

    var expected = c
    for i in 0 ..< m {
        for j in 0 ..< n {
            var sum = 0.0
            for p in 0 ..< k {
                let aValue = problem.transA ? a[p * lda + i] : a[i * lda + p]
                let bValue = problem.transB ? b[j * ldb + p] : b[p * ldb + j]
                sum += Double(aValue) * Double(bValue)
            }
            let initial = problem.beta == 0 ? 0 : Double(problem.beta) * Double(c[i * ldc + j])
            expected[i * ldc + j] = Float(Double(problem.alpha) * sum + initial)
        }
    }

    a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in
            c.withUnsafeMutableBufferPointer { c in
                GEMM.sgemm(transA: problem.transA, transB: problem.transB, m: m, n: n, k: k, alpha: problem.alpha,
                           a: a.baseAddress!, lda: lda, b: b.baseAddress!, ldb: ldb,
                           beta: problem.beta, c: c.baseAddress!, ldc: ldc, using: implementation)
            }
        }
    }
    return closeMismatch(c, expected, atol: 1e-6 * Float(k + 4), rtol: 1e-5)
}

/// y = x·Wᵀ with W kept in bfloat16, against the same product in Double on W widened: decode sizes (each kernel
/// variant's bfloat16 dot products, tails included) and prefill sizes (W widened in blocks, then the float32 product).
@Test(arguments: VectorKernels.supported, [(1, 37, 300), (3, 13, 29), (8, 40, 17), (9, 70, 65), (130, 1100, 33)])
private func bfloat16ProductMatchesWidenedReference(kernels: VectorKernels, shape: (Int, Int, Int)) {
    let (m, n, k) = shape, ldy = n + 2
    var random = SplitMix64(seed: UInt64(m * 7919 + n * 31 + k))
    let x = random.floats(m * k), w = random.floats(n * k).map(HalfConversion.bfloat16)
    var y = [Float](repeating: .nan, count: m * ldy)
    var expected = y
    for i in 0..<m {
        for j in 0..<n {
            expected[i * ldy + j] = Float((0..<k).reduce(0.0) { $0 + Double(x[i * k + $1]) * Double(HalfConversion.float(bfloat16: w[j * k + $1])) })
        }
    }
    GEMM.sgemmBF16(m: m, n: n, k: k, x: x, w: w, y: &y, ldy: ldy, kernels: kernels)
    for i in 0..<m { for j in n..<ldy { #expect(y[i * ldy + j].isNaN, "padding of row \(i) written") } }
    for i in 0..<m { for j in n..<ldy { (y[i * ldy + j], expected[i * ldy + j]) = (0, 0) } }
    #expect(closeMismatch(y, expected, atol: 1e-6 * Float(k + 4), rtol: 1e-5) == nil)
}
