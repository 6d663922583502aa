import PunicaCompute
import Testing
import TestSupport
@testable import PunicaCPU

extension VectorKernels: CustomTestStringConvertible {
    public var testDescription: String { name }
}

/// Lengths around every vector width's multiples (4, 8, 16, 32, 64) so each variant's main loop and tail both run.
private let lengths = [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 288, 769]

private func tolerance(_ count: Int) -> Float { 1e-6 * Float(count + 4) }

@Test(arguments: VectorKernels.supported)
private func dotProductsMatchDouble(kernels: VectorKernels) {
    var random = SplitMix64(seed: 7)
    for count in lengths {
        let ldx = count + 3
        let x = random.floats(4 * ldx + 1), w = random.floats(count + 1)
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
        // Three weight rows `ldx` apart against 1...4 rows of x: gemv4 and gemv4BF16 (y is rows × 3).
        for rows in 1...4 {
            var y = [Float](repeating: .nan, count: 13), yBF16 = y
            kernels.gemv4(x, ldx, rows, x, ldx, 3, count, &y)
            kernels.gemv4BF16(x, ldx, rows, xBF16, ldx, 3, count, &yBF16)
            let reference = (0..<rows * 3).map { index in
                let (r, j) = index.quotientAndRemainder(dividingBy: 3)
                return expected(row: r) { x[j * ldx + $0] }
            }
            let referenceBF16 = (0..<rows * 3).map { index in
                let (r, j) = index.quotientAndRemainder(dividingBy: 3)
                return expected(row: r) { HalfConversion.float(bfloat16: xBF16[j * ldx + $0]) }
            }
            #expect(closeMismatch(Array(y[..<(rows * 3)]), reference, atol: tolerance(count), rtol: 1e-5) == nil,
                    "gemv4 rows=\(rows) n=\(count)")
            #expect(closeMismatch(Array(yBF16[..<(rows * 3)]), referenceBF16, atol: tolerance(count), rtol: 1e-5) == nil,
                    "gemv4BF16 rows=\(rows) n=\(count)")
            #expect(y[(rows * 3)...].allSatisfy { $0.isNaN }, "gemv4 wrote past rows=\(rows)")
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
            var y = random.floats(count + 1)
            var expected = y
            for p in 0..<rows {
                for i in 0..<count { expected[i] += a[p] * x[p * ldx + i] }
            }
            kernels.axpyRows(count, rows, a, x, ldx, &y)
            #expect(closeMismatch(y, expected, atol: 1e-5, rtol: 1e-5) == nil, "axpyRows n=\(count) rows=\(rows)")
            #expect(y[count] == expected[count], "axpyRows wrote past n")
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

@Test func everyMachineRunsTheBaselineAndTheReference() {
    #expect(VectorKernels.supported.count >= 2)
    #expect(VectorKernels.supported.last?.name == "swift")
    #expect(VectorKernels.supported.contains { $0.name == VectorKernels.active.name })
}
