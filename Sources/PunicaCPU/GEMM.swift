import PunicaCompute

/// Single-precision matrix multiply: the one entry point the CPU backend uses for every product.
///
/// Semantics: C[m,n] = alpha * op(A)[m,k] · op(B)[k,n] + beta * C, all row-major with leading dimensions.
/// op(X) = Xᵀ when trans is true. (Model weights are stored as HF nn.Linear does: W[out, in], so y = x·Wᵀ is the
/// common call: transB = true.) When beta == 0, C is only written, never read (it may hold garbage or NaN).
enum GEMM {
    enum Implementation {
        /// Blocking, packing and threads in Swift around the inner loops of one `VectorKernels` variant.
        case builtin(VectorKernels)
        case blas(BLAS.Library)
    }

    /// BLAS when one is loaded, else the built-in implementation with the machine's best kernels — except these, which
    /// always run built-in:
    /// - decode-sized products (a few rows times a weight matrix): OpenBLAS 0.3.21's sgemm packs all of W on every
    ///   call, so with W coming from DRAM (as in a decode step) `skinny` below is 5× faster at m = 1, 2-3× at m = 2-4
    ///   and 1.1-1.4× at m = 8 (one thread). Only a W that stays in L3 is faster in OpenBLAS (1.4× at m = 1 and m = 8).
    /// - x·Wᵀ of up to `ntRowsBeatingBLAS` rows where the variant's `gemmNT` beats BLAS
    ///   (`VectorKernels.gemmNTBeatsBLAS`): OpenBLAS packs W first, which more rows pay for.
    static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        let builtin = isSkinny(m: m, transA: transA, lda: lda, transB: transB) || isRankUpdate(m: m, k: k, transA: transA, transB: transB)
            || (!transA && transB && m <= ntRowsBeatingBLAS && VectorKernels.active.gemmNTBeatsBLAS)
        let implementation: Implementation = builtin ? .builtin(.active) : BLAS.library.map(Implementation.blas) ?? .builtin(.active)
        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
              beta: beta, c: c, ldc: ldc, using: implementation)
    }

    /// y = x·Wᵀ for at most `skinnyRows` rows of x, each contiguous: every output is a dot product of a row of x
    /// with a contiguous row of W.
    private static func isSkinny(m: Int, transA: Bool, lda: Int, transB: Bool) -> Bool {
        transB && m <= skinnyRows && (!transA || (m == 1 && lda == 1))
    }

    static let skinnyRows = 8
    static let ntRowsBeatingBLAS = 256

    /// C[m, n] += A[m, k]·B[k, n] with few rows and a short k (LoRA's expand: v[rows, rank] · Bᵀ, B stored
    /// transposed): each row of C gets k scaled rows of B added, SIMD across n, with no dot products to reduce.
    private static func isRankUpdate(m: Int, k: Int, transA: Bool, transB: Bool) -> Bool {
        !transA && !transB && m <= skinnyRows && k <= 64
    }

    static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, using implementation: Implementation
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative shape m=\(m) n=\(n) k=\(k)")
        precondition(lda >= max(1, transA ? m : k), "sgemm: lda=\(lda) < \(transA ? "m" : "k")")
        precondition(ldb >= max(1, transB ? k : n), "sgemm: ldb=\(ldb) < \(transB ? "k" : "n")")
        precondition(ldc >= max(1, n), "sgemm: ldc=\(ldc) < n=\(n)")
        guard m > 0, n > 0 else { return }

        switch implementation {
        case .blas(let library):
            // One pool for all CPU work: OpenBLAS runs single-threaded (see `BLAS.load`) on our threads, each
            // thread taking a block of C's columns (and reading only that block of B), as the packed product does.
            let threads = usefulThreads(work: m * n * k)
            let columnsPerTask = ((n + threads - 1) / threads + 15) / 16 * 16
            let tasks = (n + columnsPerTask - 1) / columnsPerTask
            Parallel.forEach(tasks) { task in
                let first = task * columnsPerTask, width = min(columnsPerTask, n - first)
                library.sgemm(BLAS.rowMajor, transA ? BLAS.trans : BLAS.noTrans, transB ? BLAS.trans : BLAS.noTrans,
                              Int32(m), Int32(width), Int32(k), alpha, a, Int32(lda), b + first * (transB ? ldb : 1),
                              Int32(ldb), beta, c + first, Int32(ldc))
            }
        case .builtin(let kernels):
            if k == 0 || alpha == 0 {
                scale(c, rows: m, columns: n, ldc: ldc, by: beta)
            } else if isRankUpdate(m: m, k: k, transA: transA, transB: transB) {
                rankUpdate(a: a, lda: lda, b: b, ldb: ldb, m: m, n: n, k: k, alpha: alpha, beta: beta, c: c, ldc: ldc,
                           kernels: kernels)
            } else if isSkinny(m: m, transA: transA, lda: lda, transB: transB) {
                skinny(x: a, ldx: lda, rows: m, w: .float32(b), ldw: ldb, n: n, k: k, alpha: alpha, beta: beta, y: c,
                       ldy: ldc, kernels: kernels)
            } else if !transA && transB {
                ntProduct(a: a, lda: lda, b: b, ldb: ldb, m: m, n: n, k: k, alpha: alpha, beta: beta, c: c, ldc: ldc,
                          kernels: kernels)
            } else {
                packedProduct(MatrixView(a, ld: lda, transposed: transA), MatrixView(b, ld: ldb, transposed: transB),
                              m: m, n: n, k: k, alpha: alpha, beta: beta, c: c, ldc: ldc, kernels: kernels)
            }
        }
    }
}

/// A strided view of op(X): element [row, column] is base[row * rowStride + column * columnStride].
private struct MatrixView {
    let base: UnsafePointer<Float>
    let rowStride: Int
    let columnStride: Int

    var transposed: MatrixView { MatrixView(base: base, rowStride: columnStride, columnStride: rowStride) }
}

extension MatrixView {
    /// op(X) for X stored row-major with leading dimension `ld`.
    init(_ base: UnsafePointer<Float>, ld: Int, transposed: Bool) {
        self.init(base: base, rowStride: transposed ? 1 : ld, columnStride: transposed ? ld : 1)
    }
}

// MARK: - Blocking

// Micro-tile of C held in registers (`VectorKernels.tile4x8`): mr rows × nr columns. On baseline x86-64 (SSE, 16
// registers) 4×8 runs as fast per flop as 6×8, the largest tile that fits, and wastes no rows when m = 8.
private let mr = 4
private let nr = 8
private typealias Row = SIMD8<Float>
// Cache blocking: a kc×nr panel of packed B (12 KiB) stays in L1 while it meets every packed A panel of the
// mc×kc block (144 KiB, L2); the kc×nc block of packed B (768 KiB) stays in L2 across row blocks.
private let kc = 384
private let mc = 96
private let nc = 512
/// Rows of A per `gemmNT` call: 128 rows of a 1024-wide k slice (the kernel's) take 512 KiB of L2.
private let ntRows = 128
/// Each thread gets at least this many multiply-adds (a few µs): the pool's spinning threads start a job in about a
/// microsecond, and a decode GEMV streaming W from DRAM runs ~1.4× faster on two cores than on one. (With Dispatch,
/// whose workers sleep, the threshold was 16× higher, which kept every 110M decode projection but gate|up on one core.)
private let minWorkPerThread = 1 << 16

/// Threads worth using for `work` multiply-adds.
private func usefulThreads(work: Int) -> Int {
    max(1, min(Parallel.threadCount, work / minWorkPerThread))
}

/// Part `index` of `0..<extent` cut into `count` near-equal runs of whole `step`s (the last step may be partial).
private func share(_ index: Int, of count: Int, extent: Int, step: Int) -> Range<Int> {
    let steps = (extent + step - 1) / step
    return index * steps / count * step ..< min(extent, (index + 1) * steps / count * step)
}

extension GEMM {
    /// Splits C into a grid of independent tasks, each packing its own operands. Columns are split first, so each
    /// thread reads only its share of B (the weights); rows are split only when C is too narrow.
    private static func packedProduct(
        _ opA: MatrixView, _ opB: MatrixView, m: Int, n: Int, k: Int, alpha: Float, beta: Float,
        c: UnsafeMutablePointer<Float>, ldc: Int, kernels: VectorKernels
    ) {
        let threads = usefulThreads(work: m * n * k)
        let columnTasks = min(threads, (n + nr - 1) / nr)
        let rowTasks = min(threads / columnTasks, (m + mr - 1) / mr)
        Parallel.forEach(rowTasks * columnTasks) { task in
            let (rowTask, columnTask) = task.quotientAndRemainder(dividingBy: columnTasks)
            productBlock(opA, opB, rows: share(rowTask, of: rowTasks, extent: m, step: mr),
                         columns: share(columnTask, of: columnTasks, extent: n, step: nr),
                         k: k, alpha: alpha, beta: beta, c: c, ldc: ldc, kernels: kernels)
        }
    }

    /// C = alpha·A·Bᵀ + beta·C with A's and B's rows contiguous along k (`VectorKernels.gemmNT`, no packing). Tasks
    /// take blocks of B's rows (C's columns), four per thread, claimed as threads come free, so a thread the machine's
    /// other load slows takes fewer; each task meets A `ntRows` rows at a time, a block that stays in L2.
    private static func ntProduct(
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, m: Int, n: Int, k: Int, alpha: Float,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, kernels: VectorKernels
    ) {
        let threads = usefulThreads(work: m * n * k)
        let columnsPerTask = max(8, ((n + 4 * threads - 1) / (4 * threads) + 7) / 8 * 8)
        Parallel.forEach((n + columnsPerTask - 1) / columnsPerTask) { task in
            let first = task * columnsPerTask, width = min(columnsPerTask, n - first)
            for row in stride(from: 0, to: m, by: ntRows) {
                kernels.gemmNT(min(ntRows, m - row), width, k, alpha, a + row * lda, lda, b + first * ldb, ldb, beta,
                               c + row * ldc + first, ldc)
            }
        }
    }

    /// C[rows, columns] = alpha · op(A)[rows, :] · op(B)[:, columns] + beta · C[rows, columns], on one thread.
    private static func productBlock(
        _ opA: MatrixView, _ opB: MatrixView, rows: Range<Int>, columns: Range<Int>, k: Int,
        alpha: Float, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, kernels: VectorKernels
    ) {
        let packedA = UnsafeMutablePointer<Float>.allocate(capacity: mc * kc)
        let packedB = UnsafeMutablePointer<Float>.allocate(capacity: (nc + nr - 1) / nr * nr * kc)
        let tile = UnsafeMutablePointer<Float>.allocate(capacity: mr * nr)
        defer { packedA.deallocate(); packedB.deallocate(); tile.deallocate() }

        for j0 in stride(from: columns.lowerBound, to: columns.upperBound, by: nc) {
            let width = min(nc, columns.upperBound - j0)
            for p0 in stride(from: 0, to: k, by: kc) {
                let depth = min(kc, k - p0)
                // The first k block applies the caller's beta; later ones accumulate onto it.
                let blockBeta = p0 == 0 ? beta : 1
                pack(opB.transposed, rows: j0 ..< j0 + width, columns: p0 ..< p0 + depth, panelWidth: nr, into: packedB)
                for i0 in stride(from: rows.lowerBound, to: rows.upperBound, by: mc) {
                    let height = min(mc, rows.upperBound - i0)
                    pack(opA, rows: i0 ..< i0 + height, columns: p0 ..< p0 + depth, panelWidth: mr, into: packedA)
                    for j in stride(from: 0, to: width, by: nr) {
                        for i in stride(from: 0, to: height, by: mr) {
                            // Where the time goes for every product `skinny` doesn't take: 80-90% of it at
                            // m ≥ 128; packing W takes most of the rest, and up to a third at m = 8.
                            kernels.tile4x8(depth, packedA + i * depth, packedB + j * depth, tile)
                            store(tile, rows: min(mr, height - i), columns: min(nr, width - j),
                                  alpha: alpha, beta: blockBeta, c: c + (i0 + i) * ldc + j0 + j, ldc: ldc)
                        }
                    }
                }
            }
        }
    }

    /// Copies view[rows, columns] into panels of `panelWidth` rows, each stored [column][panelWidth], so the
    /// micro-kernel reads both operands contiguously whatever their layout. Past the last row the panel holds zeros:
    /// the tile rows they produce are never stored, and zeros (unlike leftover bytes) are never slow denormals.
    private static func pack(
        _ view: MatrixView, rows: Range<Int>, columns: Range<Int>, panelWidth: Int,
        into destination: UnsafeMutablePointer<Float>
    ) {
        var out = destination
        for panelStart in stride(from: rows.lowerBound, to: rows.upperBound, by: panelWidth) {
            let live = min(panelWidth, rows.upperBound - panelStart)
            var source = view.base + panelStart * view.rowStride + columns.lowerBound * view.columnStride
            var column = 0
            // Rows contiguous along k (x, and W in y = x·Wᵀ): transposing 4×4 blocks in registers made m = 8
            // products 1.4× faster than gathering one element at a time (packing W is a large share there).
            if view.columnStride == 1 && live == panelWidth && panelWidth % 4 == 0 {
                while column + 4 <= columns.count {
                    for r in stride(from: 0, to: panelWidth, by: 4) {
                        transpose4x4(source + r * view.rowStride, rowStride: view.rowStride,
                                     into: out + r, outRowStride: panelWidth)
                    }
                    column += 4
                    source += 4
                    out += 4 * panelWidth
                }
            }
            while column < columns.count {
                var element = source
                for r in 0 ..< live {
                    out[r] = element.pointee
                    element += view.rowStride
                }
                for r in live ..< panelWidth { out[r] = 0 }
                column += 1
                source += view.columnStride
                out += panelWidth
            }
        }
    }

    /// Writes the transpose of the 4×4 block at `source` to `destination`. Viewing the block as 16 elements with
    /// index (row, column) in 2+2 bits, each perfect unshuffle (even elements, then odd) rotates the index bits
    /// right by one, so two of them swap row and column.
    @inline(__always)
    private static func transpose4x4(
        _ source: UnsafePointer<Float>, rowStride: Int, into destination: UnsafeMutablePointer<Float>, outRowStride: Int
    ) {
        func row(_ r: Int) -> SIMD4<Float> {
            UnsafeRawPointer(source + r * rowStride).loadUnaligned(as: SIMD4<Float>.self)
        }
        let block = SIMD16(lowHalf: SIMD8(lowHalf: row(0), highHalf: row(1)),
                           highHalf: SIMD8(lowHalf: row(2), highHalf: row(3)))
        let once = SIMD16(lowHalf: block.evenHalf, highHalf: block.oddHalf)
        let transposed = SIMD16(lowHalf: once.evenHalf, highHalf: once.oddHalf)
        func store(_ r: Int, _ value: SIMD4<Float>) {
            UnsafeMutableRawPointer(destination + r * outRowStride).storeBytes(of: value, as: SIMD4<Float>.self)
        }
        store(0, transposed.lowHalf.lowHalf)
        store(1, transposed.lowHalf.highHalf)
        store(2, transposed.highHalf.lowHalf)
        store(3, transposed.highHalf.highHalf)
    }

    /// C[0..<rows, 0..<columns] = alpha · tile + beta · C, not reading C when beta == 0.
    /// Full rows (columns == nr, all but the right edge) go as one SIMD row.
    private static func store(
        _ tile: UnsafePointer<Float>, rows: Int, columns: Int, alpha: Float, beta: Float,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        for r in 0 ..< rows {
            let source = tile + r * nr, destination = c + r * ldc
            if columns == nr {
                let product = alpha * UnsafeRawPointer(source).loadUnaligned(as: Row.self)
                let old = beta == 0 ? Row() : beta * UnsafeRawPointer(destination).loadUnaligned(as: Row.self)
                UnsafeMutableRawPointer(destination).storeBytes(of: product + old, as: Row.self)
            } else {
                for j in 0 ..< columns {
                    let product = alpha * source[j]
                    destination[j] = beta == 0 ? product : product + beta * destination[j]
                }
            }
        }
    }

    /// C = beta · C for a product with nothing to add (k == 0 or alpha == 0); beta == 0 writes zeros without reading.
    private static func scale(_ c: UnsafeMutablePointer<Float>, rows: Int, columns: Int, ldc: Int, by beta: Float) {
        for r in 0 ..< rows {
            let row = c + r * ldc
            for j in 0 ..< columns { row[j] = beta == 0 ? 0 : beta * row[j] }
        }
    }
}

// MARK: - Decode products

extension GEMM {
    /// W of a decode product: each row `ldw` elements apart.
    enum WeightRows {
        case float32(UnsafePointer<Float>)
        case bfloat16(UnsafePointer<UInt16>)
    }

    /// y[m, n] = x[m, k]·Wᵀ (rows of x contiguous, of y `ldy` apart) for W [n, k] in bfloat16. Decode-sized
    /// products widen W in registers (`skinny`, one pass over half the bytes); larger ones widen blocks of W's rows
    /// to float32 and run the float32 product, the O(n·k) widening small against its O(m·n·k) multiply-adds.
    static func sgemmBF16(
        m: Int, n: Int, k: Int, x: UnsafePointer<Float>, w: UnsafePointer<UInt16>, y: UnsafeMutablePointer<Float>,
        ldy: Int, kernels: VectorKernels = .active
    ) {
        guard m > 0, n > 0 else { return }
        if m <= skinnyRows {
            skinny(x: x, ldx: k, rows: m, w: .bfloat16(w), ldw: k, n: n, k: k, alpha: 1, beta: 0, y: y, ldy: ldy,
                   kernels: kernels)
            return
        }
        // Each thread widens blocks of W's rows and multiplies them itself: widened on one thread, the O(n·k)
        // conversion would run between parallel products. At most 1 MiB of widened W per block, two blocks per
        // thread at least.
        let blockRows = max(nr, min((1 << 18) / max(k, 1), (n + 2 * Parallel.threadCount - 1) / (2 * Parallel.threadCount)))
        Parallel.forEach((n + blockRows - 1) / blockRows) { index in
            let first = index * blockRows, count = min(blockRows, n - first)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: count * k) { block in
                HalfConversion.toFloat32(w + first * k, dtype: .bfloat16, count: count * k, into: block.baseAddress!)
                sgemm(transA: false, transB: true, m: m, n: count, k: k, alpha: 1, a: x, lda: k, b: block.baseAddress!, ldb: k,
                      beta: 0, c: y + first, ldc: ldy)
            }
        }
    }

    /// y[r, j] = alpha·(x[r]·w[j]) + beta·y[r, j] for a few rows r. Decode steps live here: the cost is streaming W
    /// from memory, so each block of W's rows is read from memory once and multiplied into every row of x while it
    /// sits in cache; threads split W's rows.
    private static func skinny(
        x: UnsafePointer<Float>, ldx: Int, rows: Int, w: WeightRows, ldw: Int, n: Int, k: Int, alpha: Float,
        beta: Float, y: UnsafeMutablePointer<Float>, ldy: Int, kernels: VectorKernels
    ) {
        let threads = usefulThreads(work: rows * n * k)
        func write(_ sum: Float, row r: Int, column j: Int) {
            let target = y + r * ldy + j
            target.pointee = beta == 0 ? alpha * sum : alpha * sum + beta * target.pointee
        }
        Parallel.forEach(threads) { thread in
            let columns = share(thread, of: threads, extent: n, step: 1)
            // A call per block of W's rows for all of x's rows (`gemv8`): per W row, the call would cost a fair part of
            // a short row's dot. One decode row takes `gemv`, whose dot has four chains of its own. 24 rows: whole
            // tiles of AVX-512's 8 × 3 kernel.
            let block = rows == 1 ? 64 : 24
            withUnsafeTemporaryAllocation(of: Float.self, capacity: skinnyRows * block) { sums in
                for start in stride(from: columns.lowerBound, to: columns.upperBound, by: block) {
                    let count = min(block, columns.upperBound - start)
                    switch w {
                    case .float32(let w) where rows == 1: kernels.gemv(x, w + start * ldw, ldw, count, k, sums.baseAddress)
                    case .float32(let w): kernels.gemv8(x, ldx, rows, w + start * ldw, ldw, count, k, sums.baseAddress)
                    case .bfloat16(let w) where rows == 1: kernels.gemvBF16(x, w + start * ldw, ldw, count, k, sums.baseAddress)
                    case .bfloat16(let w): kernels.gemv8BF16(x, ldx, rows, w + start * ldw, ldw, count, k, sums.baseAddress)
                    }
                    for r in 0..<rows {
                        for i in 0..<count { write(sums[r * count + i], row: r, column: start + i) }
                    }
                }
            }
        }
    }

    /// c[r, :] = beta·c[r, :] + alpha·Σ_p a[r, p]·b[p, :], row by row.
    private static func rankUpdate(
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, m: Int, n: Int, k: Int, alpha: Float,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, kernels: VectorKernels
    ) {
        scale(c, rows: m, columns: n, ldc: ldc, by: beta)
        for r in 0..<m {
            for p in 0..<k { kernels.axpy(n, alpha * a[r * lda + p], b + p * ldb, c + r * ldc) }
        }
    }
}
