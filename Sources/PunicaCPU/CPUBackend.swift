#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PunicaCompute

/// Float32 host memory: owned (allocated zeroed, freed with the tensor), or a view into memory that `owner` keeps
/// alive (an adapter's weights in its host slab).
final class CPUStorage: TensorStorage {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    private let owner: AnyObject?

    init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
        owner = nil
    }

    init(viewing pointer: UnsafeMutablePointer<Float>, count: Int, owner: AnyObject) {
        self.count = count
        self.pointer = pointer
        self.owner = owner
    }

    deinit { if owner == nil { pointer.deallocate() } }
}

/// bfloat16 matrices as a bfloat16 checkpoint stores them (see `CPUBackend.init`): `matmul`, the LoRA shrink and
/// `embedding` widen them as they read, so a decode step streams half the bytes. Activations stay float32.
final class CPUBFloat16Storage: TensorStorage {
    let pointer: UnsafeMutablePointer<UInt16>

    init(bits: [UInt16]) {
        pointer = .allocate(capacity: max(bits.count, 1))
        pointer.initialize(from: bits, count: bits.count)
    }

    deinit { pointer.deallocate() }
}

extension Tensor {
    /// The float32 elements of a tensor made by `CPUBackend`.
    var floats: UnsafeMutablePointer<Float> {
        guard let storage = storage as? CPUStorage else {
            preconditionFailure("tensor \(shape) (\(dtype)) is not float32 memory of the CPU backend")
        }
        return storage.pointer
    }

    /// The bfloat16 elements of a weight the CPU backend kept in bfloat16; nil for float32 tensors.
    var bfloat16s: UnsafeMutablePointer<UInt16>? { (storage as? CPUBFloat16Storage)?.pointer }

    /// Copies the elements, widened to float32, to `destination`.
    func copyFloats(to destination: UnsafeMutablePointer<Float>) {
        if let bits = bfloat16s {
            HalfConversion.toFloat32(bits, dtype: .bfloat16, count: elementCount, into: destination)
        } else {
            destination.update(from: floats, count: elementCount)
        }
    }
}

/// A LoRA weight's B matrices transposed for the CPU expand ([rank, out] per piece), kept with the weights.
final class TransposedB {
    let pieces: [Tensor]
    init(_ pieces: [Tensor]) { self.pieces = pieces }
}

/// The CPU step plan: the batch plus the per-row facts every layer needs.
final class CPUPlan: StepPlan {
    private(set) var batch: StepBatch
    /// [T]: position of each row.
    let positions: [Int32]
    /// [T]: index into `batch.sequences` of each row's sequence.
    let sequenceOfRow: [Int]

    init(_ batch: StepBatch) {
        self.batch = batch
        positions = batch.positions
        var sequenceOfRow = [Int](repeating: 0, count: batch.rowCount)
        for (index, sequence) in batch.sequences.enumerated() {
            for row in sequence.rows { sequenceOfRow[row] = index }
        }
        self.sequenceOfRow = sequenceOfRow
    }

    /// Sets a row's input token (`Backend.feed`).
    func feed(row: Int, token: Int32) { batch.tokens[row] = token }
}

extension StepPlan {
    var cpu: CPUPlan {
        guard let plan = self as? CPUPlan else { preconditionFailure("step plan was not made by the CPU backend") }
        return plan
    }
}

/// The reference backend: float32 activations, plain loops that state each op's meaning, GEMMs through `GEMM`
/// (OpenBLAS when present). Rows are independent in every op but the GEMMs, so ops split rows across cores.
public final class CPUBackend: Backend {
    /// Whether matrices (2-D weights) of bfloat16 checkpoints, and random ones, stay bfloat16 in memory.
    public let keepsBFloat16Weights: Bool
    public let kvCacheDType: DType

    /// `bfloat16Weights`: keep a bfloat16 checkpoint's matrices in bfloat16, as llama.cpp keeps a file's type
    /// (half the memory and decode bytes; the same values, since widening bfloat16 is exact); false widens them to
    /// float32 at load. Float16 and float32 checkpoints are always widened to float32.
    /// `bfloat16KVCache`: store keys and values rounded to bfloat16 (half the cache's memory and the bytes a decode
    /// row's attention reads, as llama.cpp's default float16 cache; as transformers keeps a bfloat16 model's cache);
    /// attention still computes in float32.
    public init(bfloat16Weights: Bool = true, bfloat16KVCache: Bool = false) {
        keepsBFloat16Weights = bfloat16Weights
        kvCacheDType = bfloat16KVCache ? .bfloat16 : .float32
    }

    public var name: String {
        "cpu (\(VectorKernels.active.name) kernels, \(BLAS.library?.name ?? "built-in GEMM"), \(Parallel.threadCount) threads"
            + (kvCacheDType == .bfloat16 ? ", bfloat16 KV cache)" : ")")
    }

    // MARK: Memory

    public func kvCacheZeros(_ shape: [Int]) -> Tensor {
        guard kvCacheDType == .bfloat16 else { return zeros(shape) }
        return Tensor(shape: shape, dtype: .bfloat16, storage: CPUBFloat16Storage(bits: [UInt16](repeating: 0, count: shape.reduce(1, *))))
    }

    public func zeros(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, dtype: .float32, storage: CPUStorage(count: shape.reduce(1, *)))
    }

    public func float32Zeros(_ shape: [Int]) -> Tensor { zeros(shape) }

    public func float32(_ values: [Float], shape: [Int]) -> Tensor {
        values.withUnsafeBytes { weight(from: $0.baseAddress!, dtype: .float32, shape: shape) }
    }

    public func weight(from source: UnsafeRawPointer, dtype: DType, shape: [Int]) -> Tensor {
        if dtype == .bfloat16 && keepsBFloat16(shape) {
            let bits = (0..<shape.reduce(1, *)).map { source.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self) }
            return Tensor(shape: shape, dtype: .bfloat16, storage: CPUBFloat16Storage(bits: bits))
        }
        let tensor = zeros(shape)
        HalfConversion.toFloat32(source, dtype: dtype, count: tensor.elementCount, into: tensor.floats)
        return tensor
    }

    public var weightDType: DType { .float32 }

    public func hostBuffer(bytes: Int) -> HostBuffer { HostBuffer(byteCount: bytes) }

    /// Tensors live in host memory: the weights are views of the slab itself, no copy.
    public func weights(slab: HostBuffer, views: [(offset: Int, shape: [Int])]) -> [Tensor] {
        let floats = slab.pointer.assumingMemoryBound(to: Float.self)
        return views.map { view in
            let count = view.shape.reduce(1, *)
            precondition(view.offset >= 0 && (view.offset + count) * 4 <= slab.byteCount, "a view lies inside its slab")
            return Tensor(shape: view.shape, dtype: .float32, storage: CPUStorage(viewing: floats + view.offset, count: count, owner: slab))
        }
    }

    public func randomWeight(shape: [Int], scale: Float, seed: UInt64) -> Tensor {
        var random = SplitMix64(seed: seed)
        let values = random.floats(shape.reduce(1, *), scale: scale)
        // Random models stand in for bfloat16 checkpoints: their matrices are stored as a checkpoint's would be.
        guard keepsBFloat16(shape) else { return float32(values, shape: shape) }
        return Tensor(shape: shape, dtype: .bfloat16, storage: CPUBFloat16Storage(bits: values.map(HalfConversion.bfloat16)))
    }

    private func keepsBFloat16(_ shape: [Int]) -> Bool { keepsBFloat16Weights && shape.count == 2 }

    public func concatenateRows(_ parts: [Tensor]) -> Tensor {
        let width = parts[0].rowWidth
        precondition(parts.allSatisfy { $0.rowWidth == width }, "concatenated tensors must share their row width")
        let shape = [parts.reduce(0) { $0 + $1.rows }] + parts[0].shape.dropFirst()
        if parts.allSatisfy({ $0.bfloat16s != nil }) {
            let bits = parts.flatMap { UnsafeBufferPointer(start: $0.bfloat16s, count: $0.elementCount) }
            return Tensor(shape: shape, dtype: .bfloat16, storage: CPUBFloat16Storage(bits: bits))
        }
        let result = zeros(shape)
        var offset = 0
        for part in parts {
            part.copyFloats(to: result.floats + offset)
            offset += part.elementCount
        }
        return result
    }

    public func toHost(_ tensor: Tensor) -> [Float] {
        [Float](unsafeUninitializedCapacity: tensor.elementCount) { buffer, count in
            tensor.copyFloats(to: buffer.baseAddress!)
            count = tensor.elementCount
        }
    }

    public func plan(_ batch: StepBatch) -> StepPlan { CPUPlan(batch) }

    public func deviceMemory() -> (free: Int, total: Int)? { nil }

    public func checkSupported(_ attention: AttentionShape) throws {}

    /// Bytes per second a GEMV streams from a float32 matrix far larger than the caches, over the pool as decode's
    /// products split (one task per 4 MiB of rows): the roofline of a decode step, which reads every weight once.
    /// The fastest of 20 passes, as STREAM reports: memory bandwidth on a shared machine varies from one moment to
    /// the next, and a roofline is what the machine can do.
    public func measureReadBandwidth(bytes: Int = 1 << 29) -> Double {
        let width = 4096, taskRows = 256
        let rows = bytes / (4 * width) / taskRows * taskRows
        let matrix = UnsafeMutablePointer<Float>.allocate(capacity: rows * width)
        matrix.initialize(repeating: 1, count: rows * width)  // touched, so every page is mapped before the clock
        defer { matrix.deallocate() }
        let x = [Float](repeating: 1, count: width)
        var y = [Float](repeating: 0, count: rows)
        let kernels = VectorKernels.active, clock = ContinuousClock()
        let times = x.withUnsafeBufferPointer { x in
            y.withUnsafeMutableBufferPointer { y in
                (0..<20).map { _ in
                    clock.measure {
                        Parallel.forEach(rows / taskRows) { task in
                            let first = task * taskRows
                            kernels.gemv(x.baseAddress, matrix + first * width, width, taskRows, width, y.baseAddress! + first)
                        }
                    }.seconds
                }
            }
        }
        return Double(rows * width * 4) / times.min()!
    }

    // MARK: Ops

    public func embedding(table: Tensor, firstToken: Int, plan: StepPlan, out: Tensor) {
        let width = table.rowWidth
        for (row, token) in plan.batch.tokens.enumerated() {
            let index = Int(token) - firstToken
            if !(0..<table.rows).contains(index) {
                (out.floats + row * width).update(repeating: 0, count: width)
            } else if let bits = table.bfloat16s {
                HalfConversion.toFloat32(bits + index * width, dtype: .bfloat16, count: width, into: out.floats + row * width)
            } else {
                (out.floats + row * width).update(from: table.floats + index * width, count: width)
            }
        }
    }

    public func rmsNorm(x: Tensor, weight: Tensor, epsilon: Float, out: Tensor) {
        let width = x.rowWidth
        let (input, gain, output) = (x.floats, weight.floats, out.floats)
        forEachRow(x.rows) { row in
            Self.normalize(input + row * width, gain: gain, width: width, epsilon: epsilon, into: output + row * width)
        }
    }

    public func addRMSNorm(residual: Tensor, x: Tensor, weight: Tensor, epsilon: Float, out: Tensor) {
        let width = x.rowWidth
        let (sum, addend, gain, output) = (residual.floats, x.floats, weight.floats, out.floats)
        forEachRow(x.rows) { row in
            let r = sum + row * width
            for i in 0..<width { r[i] += addend[row * width + i] }
            Self.normalize(r, gain: gain, width: width, epsilon: epsilon, into: output + row * width)
        }
    }

    private static func normalize(_ x: UnsafeMutablePointer<Float>, gain: UnsafeMutablePointer<Float>, width: Int,
                                  epsilon: Float, into out: UnsafeMutablePointer<Float>) {
        let meanSquare = VectorKernels.active.dot(x, x, width) / Float(width)
        let inverse = 1 / (meanSquare + epsilon).squareRoot()
        for i in 0..<width { out[i] = x[i] * inverse * gain[i] }
    }

    public func matmul(x: Tensor, weight: Tensor, out: Tensor) {
        let (rows, k, n) = (x.rows, x.rowWidth, weight.rows)
        precondition(weight.rowWidth == k && out.rowWidth == n, "matmul shapes: x \(x.shape), W \(weight.shape), out \(out.shape)")
        product(x.floats, rows: rows, weight: weight, into: out.floats, ldy: n)
    }

    /// y[rows, W.rows] = x·Wᵀ (x's rows contiguous, y's `ldy` apart), for W in float32 or bfloat16.
    private func product(_ x: UnsafePointer<Float>, rows: Int, weight: Tensor, into y: UnsafeMutablePointer<Float>, ldy: Int) {
        let (n, k) = (weight.rows, weight.rowWidth)
        if let bits = weight.bfloat16s {
            GEMM.sgemmBF16(m: rows, n: n, k: k, x: x, w: bits, y: y, ldy: ldy)
        } else {
            GEMM.sgemm(transA: false, transB: true, m: rows, n: n, k: k, alpha: 1, a: x, lda: k, b: weight.floats, ldb: k,
                       beta: 0, c: y, ldc: ldy)
        }
    }

    public func addBias(x: Tensor, bias: Tensor) {
        let width = x.rowWidth
        precondition(bias.elementCount == width, "bias \(bias.shape) for rows of \(width)")
        let (data, b) = (x.floats, bias.floats)
        forEachRow(x.rows) { row in
            for i in 0..<width { data[row * width + i] += b[i] }
        }
    }

    public func headRMSNorm(qkv: Tensor, shape: AttentionShape, queryWeight: Tensor, keyWeight: Tensor, epsilon: Float) {
        let (width, d, data) = (qkv.rowWidth, shape.headDim, qkv.floats)
        // q heads then k heads sit side by side at the start of each fused row, as for RoPE.
        forEachRow(qkv.rows) { row in
            for head in 0..<(shape.queryHeads + shape.kvHeads) {
                let x = data + row * width + head * d
                Self.normalize(x, gain: (head < shape.queryHeads ? queryWeight : keyWeight).floats, width: d, epsilon: epsilon, into: x)
            }
        }
    }

    public func ropeAppendKV(qkv: Tensor, shape: AttentionShape, inverseFrequencies: Tensor, scale: Float, cache: KVCacheLayer,
                             layout: PageLayout, plan: StepPlan) {
        rope(qkv: qkv, shape: shape, inverseFrequencies: inverseFrequencies, scale: scale, plan: plan)
        appendKV(qkv: qkv, shape: shape, cache: cache, layout: layout, plan: plan)
    }

    private func rope(qkv: Tensor, shape: AttentionShape, inverseFrequencies: Tensor, scale: Float, plan: StepPlan) {
        let positions = plan.cpu.positions
        let (width, half, data, frequencies) = (qkv.rowWidth, shape.headDim / 2, qkv.floats, inverseFrequencies.floats)
        // q heads then k heads sit side by side at the start of each fused row.
        let rotatedHeads = shape.queryHeads + shape.kvHeads
        forEachRow(qkv.rows) { row in
            let position = Float(positions[row])
            for i in 0..<half {
                let angle = position * frequencies[i]
                let (cosine, sine) = (scale * cos(angle), scale * sin(angle))
                for head in 0..<rotatedHeads {
                    let x = data + row * width + head * shape.headDim
                    let (first, second) = (x[i], x[i + half])
                    x[i] = first * cosine - second * sine
                    x[i + half] = second * cosine + first * sine
                }
            }
        }
    }

    private func appendKV(qkv: Tensor, shape: AttentionShape, cache: KVCacheLayer, layout: PageLayout, plan: StepPlan) {
        let cpu = plan.cpu
        let (width, kvWidth) = (qkv.rowWidth, shape.kvWidth)
        let (keys, values) = (CacheRows(cache.keys), CacheRows(cache.values))
        for row in 0..<qkv.rows {
            let sequence = cpu.batch.sequences[cpu.sequenceOfRow[row]]
            let slot = layout.slot(ofPosition: Int(cpu.positions[row]), blockTable: sequence.blockTable)
            let source = qkv.floats + row * width + shape.queryWidth
            keys.store(source, count: kvWidth, at: slot * kvWidth)
            values.store(source + kvWidth, count: kvWidth, at: slot * kvWidth)
        }
    }

    public func attention(qkv: Tensor, shape: AttentionShape, cache: KVCacheLayer, layout: PageLayout, plan: StepPlan,
                          out: Tensor) {
        let cpu = plan.cpu
        let (width, d, kvWidth) = (qkv.rowWidth, shape.headDim, shape.kvWidth)
        let (scale, softcap) = (shape.scale, shape.softcap)
        let (keys, values) = (CacheRows(cache.keys), CacheRows(cache.values))
        let (queries, output) = (qkv.floats, out.floats)
        let kernels = VectorKernels.active
        let sequences = cpu.batch.sequences
        /// The first position a row at `position` attends to (its sliding window's start).
        func firstVisible(_ position: Int) -> Int { shape.slidingWindow.map { max(0, position - $0 + 1) } ?? 0 }
        /// Calls `body(slot, offset, count)` for each page's run of the positions `first...last` of `sequence` (the
        /// positions of a run are consecutive cache slots, kvWidth apart; offset counts from `first`).
        func forEachPage(of sequence: StepBatch.Sequence, from first: Int, through last: Int, _ body: (Int, Int, Int) -> Void) {
            var p = first
            while p <= last {
                let count = min(last + 1 - p, layout.pageSize - p % layout.pageSize)
                body(layout.slot(ofPosition: p, blockTable: sequence.blockTable), p - first, count)
                p += count
            }
        }
        /// scores[0..<n] (raw q·k) → attention weights: scaled, soft-capped, softmax.
        func softmax(_ scores: UnsafeMutablePointer<Float>, _ n: Int) {
            var maxScore = -Float.infinity
            for i in 0..<n {
                var score = scores[i] * scale
                if let softcap { score = softcap * tanh(score / softcap) }
                scores[i] = score
                maxScore = max(maxScore, score)
            }
            let inverseTotal = 1 / kernels.expShifted(n, scores, maxScore)
            for i in 0..<n { scores[i] *= inverseTotal }
        }

        // Prompt chunks of at least `attentionGEMMRows` rows attend through GEMMs, a task per sequence and kv head: its
        // keys and values gathered into contiguous [keys, d] matrices, then per block of query rows scores = q·Kᵀ,
        // a masked softmax per row, out = weights·V. Per row and page the work is too small for a kernel call to pay.
        let chunked = sequences.filter { $0.rows.count >= Self.attentionGEMMRows }
        Parallel.forEach(chunked.count * shape.kvHeads) { task in
            let (sequence, kvHead) = (chunked[task / shape.kvHeads], task % shape.kvHeads)
            let positions = sequence.rows.map { Int(cpu.positions[$0]) }
            let (first, last) = (positions.map(firstVisible).min()!, positions.max()!)
            let keyCount = last - first + 1
            var gathered = [Float](repeating: 0, count: 2 * keyCount * d)  // K, then V
            gathered.withUnsafeMutableBufferPointer { gathered in
                let (k, v) = (gathered.baseAddress!, gathered.baseAddress! + keyCount * d)
                forEachPage(of: sequence, from: first, through: last) { slot, offset, count in
                    for i in 0..<count {
                        let source = (slot + i) * kvWidth + kvHead * d
                        keys.copy(from: source, count: d, to: k + (offset + i) * d)
                        values.copy(from: source, count: d, to: v + (offset + i) * d)
                    }
                }
                let blockRows = Self.attentionGEMMBlockRows
                withUnsafeTemporaryAllocation(of: Float.self, capacity: min(blockRows, sequence.rows.count) * keyCount) { scores in
                    let scores = scores.baseAddress!
                    for head in kvHead * shape.groupSize ..< (kvHead + 1) * shape.groupSize {
                        for blockStart in stride(from: 0, to: sequence.rows.count, by: blockRows) {
                            let (row, m) = (sequence.rows.lowerBound + blockStart, min(blockRows, sequence.rows.count - blockStart))
                            GEMM.sgemm(transA: false, transB: true, m: m, n: keyCount, k: d, alpha: 1, a: queries + row * width + head * d,
                                       lda: width, b: k, ldb: d, beta: 0, c: scores, ldc: keyCount)
                            for r in 0..<m {
                                // Keys outside the row's window carry no weight: the softmax runs over its visible run.
                                let position = positions[blockStart + r], visible = firstVisible(position) - first
                                let rowScores = scores + r * keyCount
                                rowScores.update(repeating: 0, count: visible)
                                (rowScores + position - first + 1).update(repeating: 0, count: last - position)
                                softmax(rowScores + visible, position - first + 1 - visible)
                            }
                            GEMM.sgemm(transA: false, transB: false, m: m, n: d, k: keyCount, alpha: 1, a: scores, lda: keyCount,
                                       b: v, ldb: d, beta: 0, c: output + row * shape.queryWidth + head * d, ldc: shape.queryWidth)
                        }
                    }
                }
            }
        }

        // Every other row (decode rows, short chunks): a task per row and block of kv heads, so that the task reads each
        // cached position's keys and values for its heads as one run. It walks the sequence's pages once for scores and
        // once for values, a kernel call per page and query head. About two tasks per thread.
        let rows = sequences.filter { $0.rows.count < Self.attentionGEMMRows }.flatMap { Array($0.rows) }
        let blocksWanted = max(1, 2 * Parallel.threadCount / max(rows.count, 1))
        let kvPerTask = (shape.kvHeads + blocksWanted - 1) / blocksWanted
        let tasksPerRow = (shape.kvHeads + kvPerTask - 1) / kvPerTask
        Parallel.forEach(rows.count * tasksPerRow) { task in
            let (index, block) = task.quotientAndRemainder(dividingBy: tasksPerRow)
            let row = rows[index]
            let sequence = sequences[cpu.sequenceOfRow[row]]
            let position = Int(cpu.positions[row])
            let first = firstVisible(position), n = position - first + 1
            let heads = block * kvPerTask * shape.groupSize ..< min(shape.kvHeads, (block + 1) * kvPerTask) * shape.groupSize
            withUnsafeTemporaryAllocation(of: Float.self, capacity: heads.count * n) { scores in
                // scores[(head − heads.lowerBound)·n + offset]
                func headScores(_ head: Int) -> UnsafeMutablePointer<Float> { scores.baseAddress! + (head - heads.lowerBound) * n }
                func kvOffset(_ head: Int) -> Int { (head / shape.groupSize) * d }
                forEachPage(of: sequence, from: first, through: position) { slot, offset, count in
                    for head in heads {
                        let (query, start, scores) = (queries + row * width + head * d, slot * kvWidth + kvOffset(head), headScores(head) + offset)
                        switch keys {
                        case .float32(let keys): kernels.gemv(query, keys + start, kvWidth, count, d, scores)
                        case .bfloat16(let keys): kernels.gemvBF16(query, keys + start, kvWidth, count, d, scores)
                        }
                    }
                }
                for head in heads {
                    softmax(headScores(head), n)
                    (output + row * shape.queryWidth + head * d).update(repeating: 0, count: d)
                }
                forEachPage(of: sequence, from: first, through: position) { slot, offset, count in
                    for head in heads {
                        let (weights, start, sum) = (headScores(head) + offset, slot * kvWidth + kvOffset(head), output + row * shape.queryWidth + head * d)
                        switch values {
                        case .float32(let values): kernels.axpyRows(d, count, weights, values + start, kvWidth, sum)
                        case .bfloat16(let values): kernels.axpyRowsBF16(d, count, weights, values + start, kvWidth, sum)
                        }
                    }
                }
            }
        }
    }

    /// Prompt chunks of at least this many rows attend through GEMMs, in blocks of `attentionGEMMBlockRows` query rows.
    static let attentionGEMMRows = 8, attentionGEMMBlockRows = 64

    /// A layer's cached keys or values as stored (`kvCacheDType`).
    private enum CacheRows {
        case float32(UnsafeMutablePointer<Float>)
        case bfloat16(UnsafeMutablePointer<UInt16>)

        init(_ tensor: Tensor) { self = tensor.bfloat16s.map(CacheRows.bfloat16) ?? .float32(tensor.floats) }

        /// Stores `count` elements from `source` at `offset` on (rounded to nearest even in bfloat16).
        func store(_ source: UnsafePointer<Float>, count: Int, at offset: Int) {
            switch self {
            case .float32(let elements): (elements + offset).update(from: source, count: count)
            case .bfloat16(let bits): for i in 0..<count { bits[offset + i] = HalfConversion.bfloat16(source[i]) }
            }
        }

        /// Copies `count` elements from `offset` on, widened to float32.
        func copy(from offset: Int, count: Int, to destination: UnsafeMutablePointer<Float>) {
            switch self {
            case .float32(let elements): destination.update(from: elements + offset, count: count)
            case .bfloat16(let bits): HalfConversion.toFloat32(bits + offset, dtype: .bfloat16, count: count, into: destination)
            }
        }
    }

    public func siluMul(gateUp: Tensor, out: Tensor) {
        gatedActivation(gateUp: gateUp, out: out, VectorKernels.active.siluMul)
    }

    public func geluTanhMul(gateUp: Tensor, out: Tensor) {
        gatedActivation(gateUp: gateUp, out: out, VectorKernels.active.geluTanhMul)
    }

    /// out[row] = activation(gate)·up, gateUp's rows holding gate then up side by side.
    private func gatedActivation(gateUp: Tensor, out: Tensor, _ activation: VectorKernels.GatedActivation) {
        let half = out.rowWidth
        let (input, output) = (gateUp.floats, out.floats)
        forEachRow(out.rows) { row in
            let gate = input + row * 2 * half
            activation(half, gate, gate + half, output + row * half)
        }
    }

    public func scale(_ x: Tensor, by factor: Float) {
        let data = x.floats
        for i in 0..<x.elementCount { data[i] *= factor }
    }

    public func softcap(_ x: Tensor, cap: Float) {
        let data = x.floats
        for i in 0..<x.elementCount { data[i] = cap * tanh(data[i] / cap) }
    }

    public func loraShrink(x: Tensor, projection: LoRAProjection, plan: StepPlan, v: Tensor) {
        let (inWidth, vWidth) = (x.rowWidth, v.rowWidth)
        for segment in plan.batch.loraSegments {
            guard let lora = projection.slots[segment.slot] else { continue }
            product(x.floats + segment.rows.lowerBound * inWidth, rows: segment.rows.count, weight: lora.a,
                    into: v.floats + segment.rows.lowerBound * vWidth, ldy: vWidth)
        }
    }

    public func loraExpand(v: Tensor, projection: LoRAProjection, plan: StepPlan, y: Tensor) {
        let (vWidth, yWidth) = (v.rowWidth, y.rowWidth)
        for segment in plan.batch.loraSegments {
            guard let lora = projection.slots[segment.slot] else { continue }
            let first = segment.rows.lowerBound
            for (piece, bT) in zip(lora.pieces, transposedB(lora)) {
                // y[rows, out] += v[rows, rank] · Bᵀ, with Bᵀ [rank, out] stored: a short rank update per row.
                GEMM.sgemm(transA: false, transB: false, m: segment.rows.count, n: piece.outputWidth, k: piece.rank,
                           alpha: 1, a: v.floats + first * vWidth + piece.rankOffset, lda: vWidth,
                           b: bT.floats, ldb: piece.outputWidth,
                           beta: 1, c: y.floats + first * yWidth + piece.outputOffset, ldc: yWidth)
            }
        }
    }

    /// The weights' B matrices transposed ([rank, out]), made on their first expand and kept with them, so an adapter
    /// pays for it once per load: the expand then adds rank scaled rows per output row instead of one rank-long dot
    /// per output.
    private func transposedB(_ lora: LoRAWeights) -> [Tensor] {
        if let made = lora.backendForm as? TransposedB { return made.pieces }
        let pieces = lora.pieces.map { piece in
            let (outputs, rank, b) = (piece.outputWidth, piece.rank, toHost(piece.b))  // B may be bfloat16
            let transposed = zeros([rank, outputs])
            let destination = transposed.floats
            for o in 0..<outputs {
                for k in 0..<rank { destination[k * outputs + o] = b[o * rank + k] }
            }
            return transposed
        }
        lora.backendForm = TransposedB(pieces)
        return pieces
    }

    public func feed(_ fed: FedTokens, plan: StepPlan) {
        let ids = fed.source.ids
        for (row, index) in fed.rows { plan.cpu.feed(row: row, token: Int32(max(ids[index], 0))) }
    }

    public func gatherLogitRows(x: Tensor, plan: StepPlan, out: Tensor) {
        let width = x.rowWidth
        for (i, row) in plan.batch.logitRows.enumerated() {
            (out.floats + i * width).update(from: x.floats + row * width, count: width)
        }
    }

    public func sample(_ logits: Tensor, _ choices: [TokenChoice]) -> SampledTokens {
        precondition(choices.count == logits.rows, "one choice per logits row")
        let width = logits.rowWidth
        return SampledTokens(choices.enumerated().map { row, choice in choice.pick(UnsafeBufferPointer(start: logits.floats + row * width, count: width)) })
    }

    /// Runs `body` for every row, split across cores when there is enough work to pay for it.
    private func forEachRow(_ rows: Int, _ body: (Int) -> Void) {
        if rows < 4 {
            for row in 0..<rows { body(row) }
        } else {
            Parallel.forEach(rows, body)
        }
    }
}
