import Foundation
import PunicaCPU
import PunicaCUDA
import PunicaCompute
import Testing
import TestSupport

/// The GPU backends of one process (float16 and bfloat16), or none without a usable GPU: GPU suites then skip.
enum GPU {
    static let backends: [DType: CUDABackend] = {
        var backends: [DType: CUDABackend] = [:]
        for dtype in [DType.float16, .bfloat16] { backends[dtype] = try? CUDABackend(dtype: dtype) }
        return backends
    }()
    static var available: Bool { !backends.isEmpty }
}

/// Runs the same op on the CPU reference and on the GPU from the same inputs (rounded to the GPU's storage type
/// first, so only the arithmetic differs) and compares.
struct Pair {
    let cpu = CPUBackend()
    let gpu: CUDABackend
    let dtype: DType
    var random: SplitMix64

    init(_ dtype: DType, seed: UInt64) {
        self.dtype = dtype
        gpu = GPU.backends[dtype]!
        random = SplitMix64(seed: seed)
    }

    func rounded(_ values: [Float]) -> [Float] {
        values.map { dtype == .bfloat16 ? HalfConversion.float(bfloat16: HalfConversion.bfloat16($0)) : Float(Float16($0)) }
    }

    /// The same values on both backends.
    mutating func tensors(_ shape: [Int], scale: Float = 1) -> (cpu: Tensor, gpu: Tensor) {
        let values = rounded(random.floats(shape.reduce(1, *), scale: scale))
        return values.withUnsafeBytes { bytes in
            (cpu.weight(from: bytes.baseAddress!, dtype: .float32, shape: shape), gpu.weight(from: bytes.baseAddress!, dtype: .float32, shape: shape))
        }
    }

    /// Relative tolerance of one rounding to the storage type, with headroom for float32 reductions.
    var tolerance: Float { dtype == .bfloat16 ? 1.6e-2 : 2e-3 }

    func expectClose(_ pair: (cpu: Tensor, gpu: Tensor), atol: Float, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let mismatch = closeMismatch(gpu.toHost(pair.gpu), cpu.toHost(pair.cpu), atol: atol, rtol: tolerance)
        #expect(mismatch == nil, "\(label) \(dtype): \(mismatch ?? "")", sourceLocation: sourceLocation)
    }

    func zeros(_ shape: [Int]) -> (cpu: Tensor, gpu: Tensor) { (cpu.zeros(shape), gpu.zeros(shape)) }
}

/// One backend per storage type is shared, and a backend has one owner at a time: the GPU suites run one test at a time.
@Suite(.serialized, .enabled(if: GPU.available, "needs an NVIDIA GPU")) struct CUDATests {}

extension CUDATests {
    @Suite struct CUDAOpsTests {
        static let dtypes = [DType.float16, .bfloat16]

        /// Widths on (96) and off (4100) the kernels' 16-byte path.
        @Test(arguments: dtypes, [96, 4100])
        func embeddingNormsAndActivation(dtype: DType, width: Int) {
            var pair = Pair(dtype, seed: 1)
            let rows = 7
            let batch = StepBatch(tokens: [3, 0, 9, 9, 1, 4, 2], sequences: [], loraSegments: [], logitRows: [6, 0, 3])
            let plans = (pair.cpu.plan(batch), pair.gpu.plan(batch))
            let table = pair.tensors([10, width]), out = pair.zeros([rows, width])
            pair.cpu.embedding(table: table.cpu, plan: plans.0, out: out.cpu)
            pair.gpu.embedding(table: table.gpu, plan: plans.1, out: out.gpu)
            pair.expectClose(out, atol: 0, "embedding")

            let x = pair.tensors([rows, width], scale: 3), weight = pair.tensors([width]), normed = pair.zeros([rows, width])
            pair.cpu.rmsNorm(x: x.cpu, weight: weight.cpu, epsilon: 1e-5, out: normed.cpu)
            pair.gpu.rmsNorm(x: x.gpu, weight: weight.gpu, epsilon: 1e-5, out: normed.gpu)
            pair.expectClose(normed, atol: 1e-3, "rms_norm")

            let residual = pair.tensors([rows, width])
            pair.cpu.addRMSNorm(residual: residual.cpu, x: x.cpu, weight: weight.cpu, epsilon: 1e-5, out: normed.cpu)
            pair.gpu.addRMSNorm(residual: residual.gpu, x: x.gpu, weight: weight.gpu, epsilon: 1e-5, out: normed.gpu)
            pair.expectClose(residual, atol: 1e-3, "add_rms_norm residual")
            pair.expectClose(normed, atol: 1e-2, "add_rms_norm output")

            let gateUp = pair.tensors([rows, 2 * width], scale: 4), activated = pair.zeros([rows, width])
            pair.cpu.siluMul(gateUp: gateUp.cpu, out: activated.cpu)
            pair.gpu.siluMul(gateUp: gateUp.gpu, out: activated.gpu)
            pair.expectClose(activated, atol: 1e-2, "silu_mul")

            let gathered = pair.zeros([3, width])
            pair.cpu.gatherLogitRows(x: x.cpu, plan: plans.0, out: gathered.cpu)
            pair.gpu.gatherLogitRows(x: x.gpu, plan: plans.1, out: gathered.gpu)
            pair.expectClose(gathered, atol: 0, "gather_rows")
        }

        @Test(arguments: dtypes)
        func matmulThroughCuBLAS(dtype: DType) {
            var pair = Pair(dtype, seed: 2)
            for (m, n, k) in [(1, 96, 64), (33, 200, 96), (128, 512, 256)] {
                let x = pair.tensors([m, k]), w = pair.tensors([n, k], scale: 1 / Float(k).squareRoot()), out = pair.zeros([m, n])
                pair.cpu.matmul(x: x.cpu, weight: w.cpu, out: out.cpu)
                pair.gpu.matmul(x: x.gpu, weight: w.gpu, out: out.gpu)
                pair.expectClose(out, atol: 1e-2, "matmul \(m)×\(n)×\(k)")
            }
        }

        /// Mixed prefill (a chunk after cached tokens) and decode rows over shuffled pages, GQA, long enough contexts
        /// that decode splits over several blocks; with and without a sliding window; head dims 64 and 128.
        @Test(arguments: dtypes, [(64, nil), (128, nil), (128, 100)] as [(Int, Int?)])
        func ropeAppendAndPagedAttention(dtype: DType, configuration: (headDim: Int, window: Int?)) {
            var pair = Pair(dtype, seed: 3)
            let shape = AttentionShape(queryHeads: 8, kvHeads: 2, headDim: configuration.headDim, slidingWindow: configuration.window)
            let layout = PageLayout(pageSize: 16, pageCount: 200)
            let cacheShape = [layout.pageCount, layout.pageSize, shape.kvHeads, shape.headDim]
            let caches = (KVCacheLayer(keys: pair.cpu.zeros(cacheShape), values: pair.cpu.zeros(cacheShape)),
                          KVCacheLayer(keys: pair.gpu.zeros(cacheShape), values: pair.gpu.zeros(cacheShape)))
            let frequencies = (0..<shape.headDim / 2).map { Float(1 / pow(10000.0, Double(2 * $0) / Double(shape.headDim))) }
            let inverse = (pair.cpu.float32(frequencies, shape: [frequencies.count]), pair.gpu.float32(frequencies, shape: [frequencies.count]))
            var pages = Array(1..<Int32(layout.pageCount)).shuffled(using: &pair.random)
            let tables = [700, 40, 1000].map { tokens in (0..<layout.pagesNeeded(forTokens: tokens)).map { _ in pages.removeLast() } }
            // Step 1 prefills every sequence's first tokens; step 2 mixes a prefill chunk with decode rows.
            for step in [[(0, 699), (0, 30), (0, 999)], [(699, 1), (30, 10), (999, 1)]] {
                var sequences: [StepBatch.Sequence] = []
                var rows = 0
                for (index, (cached, new)) in step.enumerated() {
                    sequences.append(.init(rows: rows ..< rows + new, contextLength: cached + new, blockTable: tables[index]))
                    rows += new
                }
                let batch = StepBatch(tokens: [Int32](repeating: 0, count: rows), sequences: sequences, loraSegments: [], logitRows: [])
                let plans = (pair.cpu.plan(batch), pair.gpu.plan(batch))
                let qkv = pair.tensors([rows, shape.qkvWidth]), out = pair.zeros([rows, shape.queryWidth])
                pair.cpu.rope(qkv: qkv.cpu, shape: shape, inverseFrequencies: inverse.0, plan: plans.0)
                pair.gpu.rope(qkv: qkv.gpu, shape: shape, inverseFrequencies: inverse.1, plan: plans.1)
                pair.expectClose(qkv, atol: 2e-2, "rope")
                pair.cpu.appendKV(qkv: qkv.cpu, shape: shape, cache: caches.0, layout: layout, plan: plans.0)
                pair.gpu.appendKV(qkv: qkv.gpu, shape: shape, cache: caches.1, layout: layout, plan: plans.1)
                pair.cpu.attention(qkv: qkv.cpu, shape: shape, cache: caches.0, layout: layout, plan: plans.0, out: out.cpu)
                pair.gpu.attention(qkv: qkv.gpu, shape: shape, cache: caches.1, layout: layout, plan: plans.1, out: out.gpu)
                pair.expectClose(out, atol: 2e-2, "paged_attention step with \(rows) rows")
            }
        }

        /// SGMV on tensor cores against the CPU reference: adapters of ranks 1, 7, 16, 64 and 256 in one launch, a slot
        /// without the projection, base-only rows between segments, empty segments, and a fused output of three pieces
        /// (as q|k|v, widths not multiples of 8). Segments of 1, 15, 16, 17, 100 and 4 300 rows (one 16-row tile, tiles
        /// with a partial last one, many tiles); decode-sized steps that split the input width over blocks. Input widths
        /// on the 16-byte path (256, 11008, 14336) and off it (4100).
        @Test(arguments: dtypes, [256, 4100, 11008, 14336])
        func loraShrinkExpandMixedRanks(dtype: DType, inWidth: Int) {
            var pair = Pair(dtype, seed: 4)
            let widths = [300, 64, 37]
            let ranks = [1, 7, 16, 0, 64, 256]
            var projections: ([LoRAWeights?], [LoRAWeights?]) = ([], [])
            for rank in ranks {
                guard rank > 0 else {
                    projections.0.append(nil)
                    projections.1.append(nil)
                    continue
                }
                let a = pair.tensors([3 * rank, inWidth], scale: 1 / Float(inWidth).squareRoot())
                let bs = widths.map { pair.tensors([$0, rank], scale: 1 / Float(rank).squareRoot()) }
                let offsets = [0, widths[0], widths[0] + widths[1]]
                projections.0.append(LoRAWeights(a: a.cpu, pieces: bs.indices.map { .init(b: bs[$0].cpu, rankOffset: $0 * rank, outputOffset: offsets[$0]) }))
                projections.1.append(LoRAWeights(a: a.gpu, pieces: bs.indices.map { .init(b: bs[$0].gpu, rankOffset: $0 * rank, outputOffset: offsets[$0]) }))
            }
            // Rows 1, 50 and the last have no adapter; slot 3 does not target the projection; two segments are empty.
            let long = [LoRASegment(rows: 0..<1, slot: 0), LoRASegment(rows: 2..<17, slot: 1), LoRASegment(rows: 17..<17, slot: 2),
                        LoRASegment(rows: 17..<33, slot: 2), LoRASegment(rows: 33..<50, slot: 3), LoRASegment(rows: 51..<151, slot: 4),
                        LoRASegment(rows: 151..<168, slot: 5), LoRASegment(rows: 168..<168, slot: 1), LoRASegment(rows: 168..<169, slot: 2)]
            // Decode-sized: few tiles, so wide inputs split over blocks (the last block of each group adds the parts).
            let short = [LoRASegment(rows: 0..<1, slot: 0), LoRASegment(rows: 2..<5, slot: 1), LoRASegment(rows: 5..<6, slot: 2),
                         LoRASegment(rows: 6..<7, slot: 3), LoRASegment(rows: 7..<9, slot: 4), LoRASegment(rows: 9..<10, slot: 5)]
            let identical = [LoRASegment(rows: 0..<64, slot: 4)]
            // A prefill-sized segment: 269 tiles of one adapter, then a short one.
            let prefill = [LoRASegment(rows: 0..<4300, slot: 5), LoRASegment(rows: 4301..<4310, slot: 1)]
            for segments in inWidth == 256 ? [long, short, identical, prefill] : [long, short, identical] {
                runShrinkExpand(&pair, projections: projections, segments: segments, inWidth: inWidth, widths: widths)
            }
        }

        /// Sampling on the GPU against TokenChoice.pick: greedy, temperatures, top-k, top-p, both, penalties, ties.
        /// Each row's uniform is set to the middle of some kept token's interval, so float32 sums that differ in the
        /// last bits cannot move the draw across a boundary.
        @Test(arguments: dtypes)
        func samplingMatchesTheReference(dtype: DType) {
            var pair = Pair(dtype, seed: 5)
            let (rows, vocab) = (48, 3001)
            var values = pair.rounded(pair.random.floats(rows * vocab, scale: 4))
            let top = values[7 * vocab ..< 8 * vocab].max()!
            for i in 0..<50 { values[7 * vocab + 100 + i] = top }  // row 7 (top-k 1): 51 tied largest logits
            let logits = values.withUnsafeBytes { (pair.cpu.weight(from: $0.baseAddress!, dtype: .float32, shape: [rows, vocab]),
                                                   pair.gpu.weight(from: $0.baseAddress!, dtype: .float32, shape: [rows, vocab])) }
            let cpuLogits = pair.cpu.toHost(logits.0)
            var choices: [TokenChoice] = []
            for row in 0..<rows {
                var choice = TokenChoice(temperature: [0, 0.6, 1, 1.7][row % 4], topK: [0, 1, 5, 200, 0, 40][row % 6],
                                         topP: [1, 0.9, 0.5, 1, 0.97][row % 5], repetitionPenalty: row % 3 == 0 ? 1.3 : 1,
                                         penalized: row % 3 == 0 ? (0..<30).map { _ in Int32.random(in: 0..<Int32(vocab), using: &pair.random) } : [])
                choice.penalized = Array(Set(choice.penalized))
                let kept = cpuLogits[row * vocab ..< (row + 1) * vocab].withUnsafeBufferPointer { choice.keptWeights($0) }
                let total = kept.reduce(0.0) { $0 + Double($1.weight) }
                let wide = kept.indices.filter { Double(kept[$0].weight) > 1e-3 * total }
                let target = wide[Int.random(in: 0..<wide.count, using: &pair.random)]
                let before = kept[..<target].reduce(0.0) { $0 + Double($1.weight) }
                choice.uniform = Float((before + Double(kept[target].weight) / 2) / total)
                choices.append(choice)
            }
            // A step whose rows all sit in unfinished prompt chunks has no logit rows: nothing to sample or copy.
            let empty = pair.gpu.zeros([0, vocab])
            #expect(pair.gpu.sample(empty, []).isEmpty && pair.gpu.toHost(empty).isEmpty)
            let expected = pair.cpu.sample(logits.0, choices), sampled = pair.gpu.sample(logits.1, choices)
            for row in 0..<rows { #expect(sampled[row] == expected[row], "row \(row), \(choices[row]) \(dtype)") }
            #expect(pair.gpu.toHost(logits.1) == cpuLogits, "sampling must leave the logits as they were")
        }

        private func runShrinkExpand(_ pair: inout Pair, projections: ([LoRAWeights?], [LoRAWeights?]), segments: [LoRASegment],
                                     inWidth: Int, widths: [Int]) {
            let rows = segments.last!.rows.upperBound + 1
            let batch = StepBatch(tokens: [Int32](repeating: 0, count: rows), sequences: [], loraSegments: segments, logitRows: [])
            let x = pair.tensors([rows, inWidth])
            let yValues = pair.rounded(pair.random.floats(rows * widths.reduce(0, +)))
            let yShape = [rows, widths.reduce(0, +)]
            let (y, fusedY) = yValues.withUnsafeBytes { bytes in
                ((cpu: pair.cpu.weight(from: bytes.baseAddress!, dtype: .float32, shape: yShape),
                  gpu: pair.gpu.weight(from: bytes.baseAddress!, dtype: .float32, shape: yShape)),
                 pair.gpu.weight(from: bytes.baseAddress!, dtype: .float32, shape: yShape))
            }
            let v = (pair.cpu.float32Zeros([rows, 3 * 256]), pair.gpu.float32Zeros([rows, 3 * 256]))
            let fusedV = pair.gpu.float32Zeros([rows, 3 * 256])
            let plans = (pair.cpu.plan(batch), pair.gpu.plan(batch))
            let lora = (LoRAProjection(projections.0), LoRAProjection(projections.1))
            let before = pair.gpu.toHost(y.gpu)
            // The fused launch (sgmv_lora for steps of few tiles, else the two kernels) gives the two launches' bits.
            pair.gpu.loraShrinkExpand(x: x.gpu, projection: lora.1, plan: plans.1, v: fusedV, y: fusedY)
            pair.cpu.loraShrink(x: x.cpu, projection: lora.0, plan: plans.0, v: v.0)
            pair.gpu.loraShrink(x: x.gpu, projection: lora.1, plan: plans.1, v: v.1)
            let label = "\(segments.count) segments over \(rows) rows, input width \(inWidth)"
            pair.expectClose(v, atol: 1e-3, "sgmv shrink (v), \(label)")
            pair.cpu.loraExpand(v: v.0, projection: lora.0, plan: plans.0, y: y.cpu)
            pair.gpu.loraExpand(v: v.1, projection: lora.1, plan: plans.1, y: y.gpu)
            pair.expectClose(y, atol: 2e-2, "sgmv shrink+expand, \(label)")
            #expect(pair.gpu.toHost(fusedV) == pair.gpu.toHost(v.1), "fused launch's v, \(label)")
            #expect(pair.gpu.toHost(fusedY) == pair.gpu.toHost(y.gpu), "fused launch's y, \(label)")
            // Rows no adapter of this projection touches keep their exact bits.
            let after = pair.gpu.toHost(y.gpu), width = y.gpu.rowWidth
            let touched = Set(segments.filter { projections.1[$0.slot] != nil }.flatMap { Array($0.rows) })
            for row in 0..<rows where !touched.contains(row) {
                #expect(after[row * width ..< (row + 1) * width] == before[row * width ..< (row + 1) * width], "row \(row) changed, \(label)")
            }
        }
    }

    /// The whole model on the GPU against transformers + PEFT (float32 references). Float16 keeps every one of HF's
    /// greedy choices; logits and logprobs move by the rounding of 16-bit activations (measured on an H100: at most
    /// 0.06 in float16, 0.4 in bfloat16, for logits of standard deviation 8), so tolerances are about twice that.
    @Suite struct CUDAModelParityTests {
        @Test(arguments: HFParity.models)
        func float16LogitsAndGreedyMatchHF(model: String) async throws {
            let gpu = GPU.backends[.float16]!
            try HFParity.checkLogitsAtEveryPromptPosition(model, backend: gpu, atol: 0.12, rtol: 1e-2)
            try await HFParity.checkGreedyContinuationsInOneMixedBatch(model, backend: gpu, logprobTolerance: 0.15, exactTopOrder: false)
        }

        @Test(arguments: HFParity.models)
        func bfloat16LogitsMatchHF(model: String) throws {
            try HFParity.checkLogitsAtEveryPromptPosition(model, backend: GPU.backends[.bfloat16]!, atol: 0.8, rtol: 5e-2)
        }
    }
}
