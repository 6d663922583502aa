#if canImport(FoundationEssentials)
import FoundationEssentials
#endif
import Foundation
import PunicaCompute
import Testing
import TestSupport
@testable import PunicaCPU

extension VectorKernels: CustomTestStringConvertible {
    public var testDescription: String { name }
}

/// Lengths around every vector width's multiples (4, 8, 16, 32, 64) so each variant's main loop and tail both run, and one
/// past the 16384 floats of x the AVX-512 bfloat16 GEMV splits on the stack (beyond, on the heap).
private let lengths = [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 288, 769, 16400]

private func tolerance(_ count: Int) -> Float { 1e-6 * Float(count + 4) }

@Test(arguments: VectorKernels.supported)
private func dotProductsMatchDouble(kernels: VectorKernels) {
    var random = SplitMix64(seed: 7)
    for count in lengths {
        let ldx = count + 3
        let x = random.floats(8 * ldx + 1), w = random.floats(count + 1)
        let wBF16 = w.map(HalfConversion.bfloat16)
        func expected(row: Int, _ weight: (Int) -> Float) -> Float {
            Float((0..<count).reduce(0.0) { $0 + Double(x[row * ldx + $1]) * Double(weight($1)) })
        }
        #expect(closeMismatch([kernels.dot(x, w, count)], [expected(row: 0) { w[$0] }], atol: tolerance(count), rtol: 1e-5) == nil,
                "dot n=\(count)")
        #expect(closeMismatch([kernels.dotBF16(x, wBF16, count)], [expected(row: 0) { HalfConversion.float(bfloat16: wBF16[$0]) }],
                              atol: tolerance(count), rtol: 1e-5) == nil, "dotBF16 n=\(count)")
        // Three weight rows `ldx` apart (x's rows serve as weights), one x row: gemv and gemvBF16.
        var gemv = [Float](repeating: .nan, count: 4), gemvBF16 = gemv
        let xBF16 = x.map(HalfConversion.bfloat16)
        kernels.gemv(w, x, ldx, 3, count, &gemv)
        kernels.gemvBF16(w, xBF16, ldx, 3, count, &gemvBF16)
        let gemvReference = (0..<3).map { j in expected(row: j) { w[$0] } }
        let gemvBF16Reference = (0..<3).map { j in
            Float((0..<count).reduce(0.0) { $0 + Double(w[$1]) * Double(HalfConversion.float(bfloat16: xBF16[j * ldx + $1])) })
        }
        #expect(closeMismatch(Array(gemv[..<3]), gemvReference, atol: tolerance(count), rtol: 1e-5) == nil, "gemv n=\(count)")
        #expect(closeMismatch(Array(gemvBF16[..<3]), gemvBF16Reference, atol: tolerance(count), rtol: 1e-5) == nil, "gemvBF16 n=\(count)")
        #expect(gemv[3].isNaN && gemvBF16[3].isNaN, "gemv wrote past its rows")
        // Seven weight rows `ldx` apart (two of AVX-512's 8 × 3 tiles and a part) against 1...8 rows of x: gemv8 and
        // gemv8BF16 (y is rows × 7).
        for rows in 1...8 {
            var y = [Float](repeating: .nan, count: 8 * 7 + 1), yBF16 = y
            kernels.gemv8(x, ldx, rows, x, ldx, 7, count, &y)
            kernels.gemv8BF16(x, ldx, rows, xBF16, ldx, 7, count, &yBF16)
            let reference = (0..<rows * 7).map { index in
                let (r, j) = index.quotientAndRemainder(dividingBy: 7)
                return expected(row: r) { x[j * ldx + $0] }
            }
            let referenceBF16 = (0..<rows * 7).map { index in
                let (r, j) = index.quotientAndRemainder(dividingBy: 7)
                return expected(row: r) { HalfConversion.float(bfloat16: xBF16[j * ldx + $0]) }
            }
            #expect(closeMismatch(Array(y[..<(rows * 7)]), reference, atol: tolerance(count), rtol: 1e-5) == nil,
                    "gemv8 rows=\(rows) n=\(count)")
            #expect(closeMismatch(Array(yBF16[..<(rows * 7)]), referenceBF16, atol: tolerance(count), rtol: 1e-5) == nil,
                    "gemv8BF16 rows=\(rows) n=\(count)")
            #expect(y[(rows * 7)...].allSatisfy { $0.isNaN } && yBF16[(rows * 7)...].allSatisfy { $0.isNaN },
                    "gemv8 wrote past rows=\(rows)")
        }
    }
}

@Test(arguments: VectorKernels.supported)
private func axpyAddsAndLeavesTheRestAlone(kernels: VectorKernels) {
    var random = SplitMix64(seed: 8)
    for count in lengths {
        let x = random.floats(count + 1)
        var y = random.floats(count + 1)
        let expected = (0..<count).map { y[$0] + 0.75 * x[$0] } + [y[count]]
        kernels.axpy(count, 0.75, x, &y)
        #expect(closeMismatch(y, expected, atol: 1e-6, rtol: 1e-6) == nil, "axpy n=\(count)")
    }
}

@Test(arguments: VectorKernels.supported)
private func axpyRowsAddsEachWeightedRow(kernels: VectorKernels) {
    var random = SplitMix64(seed: 10)
    for count in lengths {
        for rows in [0, 1, 3, 16] {
            let ldx = count + 5
            let x = random.floats(rows * ldx + 1), a = random.floats(rows + 1)
            let xBF16 = x.map(HalfConversion.bfloat16)
            let start = random.floats(count + 1)
            var expected = start, expectedBF16 = start
            for p in 0..<rows {
                for i in 0..<count {
                    expected[i] += a[p] * x[p * ldx + i]
                    expectedBF16[i] += a[p] * HalfConversion.float(bfloat16: xBF16[p * ldx + i])
                }
            }
            var y = start, yBF16 = start
            kernels.axpyRows(count, rows, a, x, ldx, &y)
            kernels.axpyRowsBF16(count, rows, a, xBF16, ldx, &yBF16)
            #expect(closeMismatch(y, expected, atol: 1e-5, rtol: 1e-5) == nil, "axpyRows n=\(count) rows=\(rows)")
            #expect(closeMismatch(yBF16, expectedBF16, atol: 1e-5, rtol: 1e-5) == nil, "axpyRowsBF16 n=\(count) rows=\(rows)")
            #expect(y[count] == expected[count] && yBF16[count] == expected[count], "axpyRows wrote past n")
        }
    }
}

@Test(arguments: VectorKernels.supported)
private func tileMatchesDouble(kernels: VectorKernels) {
    var random = SplitMix64(seed: 9)
    for depth in [0, 1, 5, 33, 384] {
        let a = random.floats(4 * depth + 1), b = random.floats(8 * depth + 1)
        var tile = [Float](repeating: .nan, count: 32)
        kernels.tile4x8(depth, a, b, &tile)
        let expected = (0..<32).map { index in
            let (r, j) = index.quotientAndRemainder(dividingBy: 8)
            return Float((0..<depth).reduce(0.0) { $0 + Double(a[$1 * 4 + r]) * Double(b[$1 * 8 + j]) })
        }
        #expect(closeMismatch(tile, expected, atol: tolerance(depth), rtol: 1e-5) == nil, "tile depth=\(depth)")
    }
}

/// x·wᵀ through `gemmNT` against Double: tile edges in m and n (every variant's R × C), k around the vector widths and
/// past the kernel's 1024-long k slice, alpha and beta (beta == 0 must not read y, which starts as NaN), and padded
/// rows that must come back untouched.
@Test(arguments: VectorKernels.supported)
private func gemmNTMatchesDouble(kernels: VectorKernels) {
    var random = SplitMix64(seed: 12)
    for (m, n, k) in [(1, 1, 1), (2, 3, 17), (3, 8, 16), (4, 9, 33), (5, 17, 64), (7, 5, 100), (13, 24, 288), (6, 11, 2100)] {
        for (alpha, beta): (Float, Float) in [(1, 0), (1.5, -0.5)] {
            let (ldx, ldw, ldy) = (k + 3, k + 1, n + 2)
            let x = random.floats(m * ldx), w = random.floats(n * ldw)
            var y = beta == 0 ? [Float](repeating: .nan, count: m * ldy) : random.floats(m * ldy)
            var expected = y
            for r in 0..<m {
                for j in 0..<n {
                    let sum = (0..<k).reduce(0.0) { $0 + Double(x[r * ldx + $1]) * Double(w[j * ldw + $1]) }
                    expected[r * ldy + j] = Float(Double(alpha) * sum + (beta == 0 ? 0 : Double(beta) * Double(y[r * ldy + j])))
                }
            }
            kernels.gemmNT(m, n, k, alpha, x, ldx, w, ldw, beta, &y, ldy)
            let padding = (0..<m).flatMap { r in (n..<ldy).map { r * ldy + $0 } }
            #expect(padding.allSatisfy { y[$0].isNaN == expected[$0].isNaN && (y[$0].isNaN || y[$0] == expected[$0]) },
                    "gemmNT \(m)×\(n)×\(k) wrote past n")
            for index in padding { (y[index], expected[index]) = (0, 0) }
            #expect(closeMismatch(y, expected, atol: tolerance(k) * 2, rtol: 1e-5) == nil, "gemmNT \(m)×\(n)×\(k) alpha \(alpha) beta \(beta)")
        }
    }
}

/// The activations and the softmax numerators against Double math: near zero, across the working range, past exp's
/// clamp ([−87, 88]), and at every tail length. Within a few float ulps, except where exp is clamped: there the exact
/// values are below 1e-30 and the kernels' below 1e-12.
@Test(arguments: VectorKernels.supported)
private func elementwiseMathMatchesDouble(kernels: VectorKernels) {
    var random = SplitMix64(seed: 13)
    for count in lengths {
        let spread = random.floats(count).map { $0 * 24 }  // about ±24: the activations' working range
        let gate = spread.enumerated().map { index, value in [-200, -90, -1e-6, 0, 1e-6, 90, 200][index % 7] * (index % 3 == 0 ? 1 : 0) + value }
        let up = random.floats(count)
        func check(_ name: String, _ kernel: VectorKernels.GatedActivation, _ reference: (Double) -> Double) {
            var out = [Float](repeating: .nan, count: count + 1)
            kernel(count, gate, up, &out)
            let expected = (0..<count).map { Float(reference(Double(gate[$0])) * Double(up[$0])) }
            #expect(closeMismatch(Array(out[..<count]), expected, atol: 1e-12, rtol: 4e-6) == nil, "\(name) n=\(count)")
            #expect(out[count].isNaN, "\(name) wrote past n=\(count)")
        }
        check("siluMul", kernels.siluMul) { $0 / (1 + Foundation.exp(-$0)) }
        check("geluTanhMul", kernels.geluTanhMul) { 0.5 * $0 * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) }

        // Softmax numerators: scores at or below the shift, as a softmax has them, down to −100 (below the clamp).
        let scores = spread.map { -abs($0) * 4 }
        var x = scores + [.nan]
        let total = kernels.expShifted(count, &x, 0.5)
        let expected = scores.map { Foundation.exp(Double($0) - 0.5) }
        #expect(closeMismatch(Array(x[..<count]), expected.map(Float.init), atol: 1e-37, rtol: 4e-6) == nil, "expShifted n=\(count)")
        #expect(abs(Double(total) - expected.reduce(0, +)) <= 1e-5 * max(1, expected.reduce(0, +)), "expShifted sum n=\(count)")
        #expect(x[count].isNaN, "expShifted wrote past n=\(count)")
    }
}

@Test func everyMachineRunsTheBaselineAndTheReference() {
    #expect(VectorKernels.supported.count >= 2)
    #expect(VectorKernels.supported.last?.name == "swift")
    #expect(VectorKernels.supported.contains { $0.name == VectorKernels.active.name })
}
