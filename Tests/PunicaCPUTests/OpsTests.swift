import Foundation
import PunicaCPU
import PunicaCompute
import Testing
import TestSupport

/// Each CPU op against a plain, unpaged, double-precision statement of its meaning on random inputs.
@Suite struct OpsTests {
    let backend = CPUBackend()

    func tensor(_ values: [Float], _ shape: [Int]) -> Tensor {
        values.withUnsafeBytes { backend.weight(from: $0.baseAddress!, dtype: .float32, shape: shape) }
    }

    @Test func rmsNormAndFusedResidualAdd() {
        var random = SplitMix64(seed: 1)
        let (rows, width, eps): (Int, Int, Float) = (5, 37, 1e-5)
        let x = random.floats(rows * width, scale: 3), addend = random.floats(rows * width), gain = random.floats(width)
        func reference(_ input: [Float]) -> [Float] {
            (0..<rows).flatMap { row -> [Float] in
                let slice = input[row * width ..< (row + 1) * width].map(Double.init)
                let inverse = 1 / (slice.reduce(0) { $0 + $1 * $1 } / Double(width) + Double(eps)).squareRoot()
                return slice.enumerated().map { Float($1 * inverse * Double(gain[$0])) }
            }
        }
        let out = backend.zeros([rows, width])
        backend.rmsNorm(x: tensor(x, [rows, width]), weight: tensor(gain, [width]), epsilon: eps, out: out)
        #expect(closeMismatch(backend.toHost(out), reference(x), atol: 1e-5, rtol: 1e-5) == nil)

        let residual = tensor(x, [rows, width])
        backend.addRMSNorm(residual: residual, x: tensor(addend, [rows, width]), weight: tensor(gain, [width]), epsilon: eps, out: out)
        let sum = zip(x, addend).map(+)
        #expect(backend.toHost(residual) == sum)
        #expect(closeMismatch(backend.toHost(out), reference(sum), atol: 1e-5, rtol: 1e-5) == nil)
    }

    @Test func geluTanhMulScaleAndSoftcap() {
        var random = SplitMix64(seed: 10)
        let (rows, half) = (3, 19)
        let gateUp = random.floats(rows * 2 * half, scale: 4)
        let out = backend.zeros([rows, half])
        backend.geluTanhMul(gateUp: tensor(gateUp, [rows, 2 * half]), out: out)
        let expected = (0..<rows * half).map { index -> Float in
            let (row, i) = index.quotientAndRemainder(dividingBy: half)
            let x = Double(gateUp[row * 2 * half + i])
            return Float(0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))) * Double(gateUp[row * 2 * half + half + i]))
        }
        #expect(closeMismatch(backend.toHost(out), expected, atol: 1e-5, rtol: 1e-5) == nil)

        let x = random.floats(40, scale: 30)
        let scaled = tensor(x, [4, 10])
        backend.scale(scaled, by: 8)
        #expect(backend.toHost(scaled) == x.map { $0 * 8 })
        backend.softcap(scaled, cap: 30)
        #expect(closeMismatch(backend.toHost(scaled), x.map { Float(30 * tanh(Double($0 * 8) / 30)) }, atol: 1e-5, rtol: 1e-5) == nil)
        #expect(backend.toHost(scaled).allSatisfy { abs($0) < 30 })
    }

    @Test func addBias() {
        var random = SplitMix64(seed: 7)
        let (rows, width) = (5, 23)
        let x = random.floats(rows * width, scale: 2), bias = random.floats(width)
        let out = tensor(x, [rows, width])
        backend.addBias(x: out, bias: tensor(bias, [width]))
        #expect(backend.toHost(out) == x.indices.map { x[$0] + bias[$0 % width] })
    }

    /// A whole table, and a tensor-parallel rank's part of the vocabulary (tokens 3 ..< 7), whose other tokens get zeros.
    @Test func embeddingOfTheWholeVocabularyAndOfAPart() {
        var random = SplitMix64(seed: 11)
        let (vocabulary, width) = (10, 6)
        let table = random.floats(vocabulary * width)
        let tokens: [Int32] = [3, 0, 9, 6, 7, 4]
        let plan = backend.plan(StepBatch(tokens: tokens, sequences: [], loraSegments: [], logitRows: []))
        let out = backend.zeros([tokens.count, width])
        backend.embedding(table: tensor(table, [vocabulary, width]), firstToken: 0, plan: plan, out: out)
        func row(_ token: Int32) -> [Float] { Array(table[Int(token) * width ..< (Int(token) + 1) * width]) }
        #expect(backend.toHost(out) == tokens.flatMap(row))
        backend.embedding(table: tensor(Array(table[3 * width ..< 7 * width]), [4, width]), firstToken: 3, plan: plan, out: out)
        let zeros = [Float](repeating: 0, count: width)
        #expect(backend.toHost(out) == tokens.flatMap { (3..<7).contains($0) ? row($0) : zeros })
    }

    /// Each q and k head normalized with its own weight; v untouched.
    @Test func headRMSNormOfQueryAndKeyHeads() {
        var random = SplitMix64(seed: 8)
        let shape = AttentionShape(queryHeads: 4, kvHeads: 2, headDim: 6)
        let (rows, width, eps): (Int, Int, Float) = (5, shape.qkvWidth, 1e-6)
        let qkv = random.floats(rows * width, scale: 3), queryGain = random.floats(shape.headDim), keyGain = random.floats(shape.headDim)
        var expected = qkv
        for row in 0..<rows {
            for head in 0..<(shape.queryHeads + shape.kvHeads) {
                let start = row * width + head * shape.headDim
                let slice = qkv[start ..< start + shape.headDim].map(Double.init)
                let inverse = 1 / (slice.reduce(0) { $0 + $1 * $1 } / Double(shape.headDim) + Double(eps)).squareRoot()
                let gain = head < shape.queryHeads ? queryGain : keyGain
                for i in 0..<shape.headDim { expected[start + i] = Float(slice[i] * inverse * Double(gain[i])) }
            }
        }
        let out = tensor(qkv, [rows, width])
        backend.headRMSNorm(qkv: out, shape: shape, queryWeight: tensor(queryGain, [shape.headDim]),
                            keyWeight: tensor(keyGain, [shape.headDim]), epsilon: eps)
        #expect(closeMismatch(backend.toHost(out), expected, atol: 1e-5, rtol: 1e-5) == nil)
        let v = (0..<rows).flatMap { row in (row * width + shape.queryWidth + shape.kvWidth ..< (row + 1) * width) }
        #expect(v.map { backend.toHost(out)[$0] } == v.map { qkv[$0] }, "v is left as it is")
    }

    @Test func siluMul() {
        var random = SplitMix64(seed: 2)
        let (rows, half) = (3, 19)
        let gateUp = random.floats(rows * 2 * half, scale: 4)
        let out = backend.zeros([rows, half])
        backend.siluMul(gateUp: tensor(gateUp, [rows, 2 * half]), out: out)
        let expected = (0..<rows * half).map { index -> Float in
            let (row, i) = index.quotientAndRemainder(dividingBy: half)
            let gate = Double(gateUp[row * 2 * half + i])
            return Float(gate / (1 + exp(-gate)) * Double(gateUp[row * 2 * half + half + i]))
        }
        #expect(closeMismatch(backend.toHost(out), expected, atol: 1e-5, rtol: 1e-5) == nil)
    }

    /// Three sequences at different stages (prefill from scratch, a prefill chunk after cached tokens, decode),
    /// pages shuffled, GQA 4:2: rope → append → attention equals dense causal attention over the whole history;
    /// with and without a sliding window, and with Gemma 2's score scale and soft-cap; cos and sin scaled (LongRoPE);
    /// with a float32 cache and a bfloat16 one (against the history's keys and values rounded to bfloat16).
    @Test(arguments: [(nil, false, false), (3, false, false), (3, true, false), (nil, false, true), (3, true, true)] as [(Int?, Bool, Bool)])
    func pagedAttentionMatchesDenseCausalAttention(slidingWindow: Int?, scaledAndCapped: Bool, bfloat16Cache: Bool) {
        let backend = bfloat16Cache ? CPUBackend(bfloat16KVCache: true) : backend
        var random = SplitMix64(seed: 3)
        let shape = AttentionShape(queryHeads: 4, kvHeads: 2, headDim: 8, slidingWindow: slidingWindow,
                                   scale: scaledAndCapped ? 0.6 : nil, softcap: scaledAndCapped ? 0.8 : nil)
        let layout = PageLayout(pageSize: 2, pageCount: 64)
        let frequencies = (0..<shape.headDim / 2).map { Float(1 / pow(100.0, Double(2 * $0) / Double(shape.headDim))) }
        let ropeScale: Float = 1.25
        let cache = KVCacheLayer(keys: backend.kvCacheZeros([64, 2, 2, 8]), values: backend.kvCacheZeros([64, 2, 2, 8]))
        #expect(cache.keys.dtype == (bfloat16Cache ? .bfloat16 : .float32))
        let pages = Array(1..<64).map(Int32.init).shuffled(using: &random)
        let tables = [Array(pages[0..<38]), Array(pages[38..<46]), Array(pages[46..<56])]
        // (tokens already cached, new tokens this step) per sequence. Chunks of CPUBackend.attentionGEMMRows rows or more
        // take the GEMM path: from position 0, after cached tokens, and over two blocks of query rows (70).
        let steps = [[(0, 5), (0, 3), (0, 10)], [(5, 1), (3, 12), (10, 1)], [(6, 70), (15, 1), (11, 9)]]
        var history: [[[Float]]] = [[], [], []]  // per sequence: rotated qkv rows, every position so far
        for step in steps {
            var sequences: [StepBatch.Sequence] = []
            var rows: [[Float]] = []
            for (index, (cached, new)) in step.enumerated() {
                sequences.append(.init(rows: rows.count ..< rows.count + new, contextLength: cached + new, blockTable: tables[index]))
                rows += (0..<new).map { _ in random.floats(shape.qkvWidth) }
            }
            let batch = StepBatch(tokens: [Int32](repeating: 0, count: rows.count), sequences: sequences, loraSegments: [], logitRows: [])
            let plan = backend.plan(batch)
            let qkv = tensor(rows.flatMap { $0 }, [rows.count, shape.qkvWidth])
            let out = backend.zeros([rows.count, shape.queryWidth])
            backend.ropeAppendKV(qkv: qkv, shape: shape, inverseFrequencies: tensor(frequencies, [frequencies.count]), scale: ropeScale,
                                 cache: cache, layout: layout, plan: plan)
            let rotated = backend.toHost(qkv)
            for (row, position) in batch.positions.enumerated() {
                #expect(closeMismatch(Array(rotated[row * shape.qkvWidth ..< row * shape.qkvWidth + shape.queryWidth + shape.kvWidth]),
                                      ropeReference(rows[row], position: Int(position), shape: shape, frequencies: frequencies, scale: ropeScale),
                                      atol: 1e-5) == nil)
            }
            backend.attention(qkv: qkv, shape: shape, cache: cache, layout: layout, plan: plan, out: out)
            let actual = backend.toHost(out)
            for (index, sequence) in sequences.enumerated() {
                history[index] += sequence.rows.map { row in
                    let start = row * shape.qkvWidth
                    return (0..<shape.qkvWidth).map { i in
                        let value = rotated[start + i]
                        return bfloat16Cache && i >= shape.queryWidth ? HalfConversion.float(bfloat16: HalfConversion.bfloat16(value)) : value
                    }
                }
                for (i, row) in sequence.rows.enumerated() {
                    let position = sequence.firstPosition + i
                    let expected = attentionReference(query: history[index][position], keysAndValues: Array(history[index][0...position]),
                                                      shape: shape)
                    let mismatch = closeMismatch(Array(actual[row * shape.queryWidth ..< (row + 1) * shape.queryWidth]), expected, atol: 1e-5)
                    #expect(mismatch == nil, "sequence \(index) position \(position): \(mismatch ?? "")")
                }
            }
        }
    }

    private func ropeReference(_ row: [Float], position: Int, shape: AttentionShape, frequencies: [Float], scale: Float) -> [Float] {
        let half = shape.headDim / 2
        return (0..<shape.queryHeads + shape.kvHeads).flatMap { head -> [Float] in
            let x = row[head * shape.headDim ..< (head + 1) * shape.headDim].map(Double.init)
            return (0..<shape.headDim).map { i in
                let angle = Double(Float(position) * frequencies[i % half])
                let (cosine, sine) = (Double(scale) * cos(angle), Double(scale) * sin(angle))
                return Float(i < half ? x[i] * cosine - x[i + half] * sine : x[i] * cosine + x[i - half] * sine)
            }
        }
    }

    /// softmax(cap(q·kᵀ · scale))·v over the given (rotated) rows, the last being the query's own position.
    private func attentionReference(query: [Float], keysAndValues: [[Float]], shape: AttentionShape) -> [Float] {
        let d = shape.headDim
        let position = keysAndValues.count - 1
        let first = shape.slidingWindow.map { max(0, position - $0 + 1) } ?? 0
        return (0..<shape.queryHeads).flatMap { head -> [Float] in
            let kvHead = head / shape.groupSize
            let q = query[head * d ..< (head + 1) * d].map(Double.init)
            let keyOffset = shape.queryWidth + kvHead * d, valueOffset = shape.queryWidth + shape.kvWidth + kvHead * d
            let scores = (first...position).map { p in
                let score = (0..<d).reduce(0.0) { $0 + q[$1] * Double(keysAndValues[p][keyOffset + $1]) } * Double(shape.scale)
                return shape.softcap.map { Double($0) * tanh(score / Double($0)) } ?? score
            }
            let maxScore = scores.max()!
            let weights = scores.map { exp($0 - maxScore) }
            let total = weights.reduce(0, +)
            return (0..<d).map { i in
                Float(zip(first...position, weights).reduce(0.0) { $0 + $1.1 / total * Double(keysAndValues[$1.0][valueOffset + i]) })
            }
        }
    }

    /// SGMV: segments with gaps (base-only rows), an adapter that skips the projection, mixed ranks and a fused
    /// output with two pieces. Each row equals its own dense x·Aᵀ·Bᵀ; rows outside segments are untouched.
    @Test func loraShrinkExpandFollowSegmentSemantics() {
        var random = SplitMix64(seed: 4)
        let (rows, inWidth, outWidths) = (9, 12, [10, 6])
        let ranks = [3, 8, 0, 5]  // rank 0: the adapter in slot 2 does not target this projection
        let weights: [(a: [Float], b: [[Float]])?] = ranks.map { rank in
            rank == 0 ? nil : (random.floats(rank * inWidth), outWidths.map { random.floats($0 * (rank / 2 + 1)) })
        }
        // Piece 0 reads the first r/2+1 columns of v, piece 1 the last r/2+1: they overlap, which the semantics allow.
        let projection = LoRAProjection(weights.enumerated().map { slot, weight in
            weight.map { weight in
                let pieceRank = ranks[slot] / 2 + 1
                return LoRAWeights(a: tensor(weight.a, [ranks[slot], inWidth]), pieces: outWidths.enumerated().map { j, width in
                    LoRAWeights.Piece(b: tensor(weight.b[j], [width, pieceRank]), rankOffset: j == 0 ? 0 : ranks[slot] - pieceRank,
                                      outputOffset: j == 0 ? 0 : outWidths[0])
                })
            }
        })
        let segments = [LoRASegment(rows: 0..<2, slot: 1), LoRASegment(rows: 3..<6, slot: 0), LoRASegment(rows: 6..<7, slot: 2),
                        LoRASegment(rows: 7..<9, slot: 3)]
        let x = random.floats(rows * inWidth)
        let yStart = random.floats(rows * outWidths.reduce(0, +))
        let yWidth = outWidths.reduce(0, +)
        let plan = backend.plan(StepBatch(tokens: [Int32](repeating: 0, count: rows), sequences: [], loraSegments: segments, logitRows: []))
        func check(_ note: Comment) {
            let v = backend.zeros([rows, 8])
            let y = tensor(yStart, [rows, yWidth])
            backend.loraShrink(x: tensor(x, [rows, inWidth]), projection: projection, plan: plan, v: v)
            backend.loraExpand(v: v, projection: projection, plan: plan, y: y)
            var expected = yStart
            for segment in segments {
                guard let lora = projection.slots[segment.slot] else { continue }
                let a = backend.toHost(lora.a)
                for row in segment.rows {
                    let shrunk = (0..<lora.rank).map { r in (0..<inWidth).reduce(0.0) { $0 + Double(x[row * inWidth + $1]) * Double(a[r * inWidth + $1]) } }
                    for piece in lora.pieces {
                        let b = backend.toHost(piece.b)
                        for o in 0..<piece.outputWidth {
                            let delta = (0..<piece.rank).reduce(0.0) { $0 + shrunk[piece.rankOffset + $1] * Double(b[o * piece.rank + $1]) }
                            expected[row * yWidth + piece.outputOffset + o] += Float(delta)
                        }
                    }
                }
            }
            #expect(closeMismatch(backend.toHost(y), expected, atol: 1e-4) == nil, note)
            #expect(Array(backend.toHost(y)[2 * yWidth ..< 3 * yWidth]) == Array(yStart[2 * yWidth ..< 3 * yWidth]), "row 2 has no adapter")
        }
        check("as loaded")
        // A backend's per-weights form (the CPU's transposed B) must follow the weights when the resident set changes.
        projection.update([projection.slots[3], projection.slots[1], nil, projection.slots[0]])
        check("after slots 0 and 3 swapped")
    }
}

/// A bfloat16 checkpoint's matrices kept in bfloat16 give what widening them to float32 at load gives: the values
/// are the same (widening is exact), so only the order of additions may differ.
@Test func bfloat16WeightsMatchFloat32Weights() {
    let (kept, widened) = (CPUBackend(bfloat16Weights: true), CPUBackend(bfloat16Weights: false))
    var random = SplitMix64(seed: 11)
    let (rows, k, n) = (3, 37, 21)
    let bits = random.floats(n * k).map(HalfConversion.bfloat16), x = random.floats(rows * k)
    func load(_ backend: CPUBackend, _ shape: [Int]) -> Tensor {
        bits.withUnsafeBytes { backend.weight(from: $0.baseAddress!, dtype: .bfloat16, shape: shape) }
    }
    let (w, wide) = (load(kept, [n, k]), load(widened, [n, k]))
    #expect(w.dtype == .bfloat16 && wide.dtype == .float32)
    #expect(kept.toHost(w) == widened.toHost(wide))
    // Norm gains (1-D) stay float32; fused projections keep bfloat16.
    #expect(load(kept, [n * k]).dtype == .float32)
    let fused = kept.concatenateRows([w, w])
    #expect(fused.dtype == .bfloat16 && kept.toHost(fused) == widened.toHost(wide) + widened.toHost(wide))
    #expect(kept.toHost(kept.concatenateRows([w, wide])) == widened.toHost(wide) + widened.toHost(wide))

    for rowCount in [rows, 20] {  // the decode product and the widened-block one
        let input = (0..<rowCount * k).map { x[$0 % x.count] }
        let results = [(kept, w), (widened, wide)].map { backend, weight in
            let out = backend.zeros([rowCount, n])
            backend.matmul(x: backend.float32(input, shape: [rowCount, k]), weight: weight, out: out)
            return backend.toHost(out)
        }
        #expect(closeMismatch(results[0], results[1], atol: 1e-5, rtol: 1e-5) == nil)
    }
}
