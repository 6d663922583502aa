import Foundation
import PunicaCPU
@testable import PunicaCUDA
import PunicaCompute
import PunicaModel
import Testing
import TestSupport

/// The GPU backends of one process (float16 and bfloat16), or none without a usable GPU: GPU suites then skip.
/// With PUNICA_REQUIRE_GPU=1 (scripts/gpu.sh on the GPU host) a backend that fails to start — a kernel NVRTC
/// refuses, say — stops the run instead of skipping every GPU test.
enum GPU {
    static let backends: [DType: CUDABackend] = {
        var backends: [DType: CUDABackend] = [:]
        for dtype in [DType.float16, .bfloat16] {
            do {
                backends[dtype] = try CUDABackend(dtype: dtype)
            } catch where ProcessInfo.processInfo.environment["PUNICA_REQUIRE_GPU"] == "1" {
                fatalError("PUNICA_REQUIRE_GPU=1 but the \(dtype) CUDA backend did not start: \(error)")
            } catch {}
        }
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

    /// An empty KV cache layer of `layout`'s pages on each backend.
    func caches(_ layout: PageLayout, _ shape: AttentionShape) -> (KVCacheLayer, KVCacheLayer) {
        let cacheShape = [layout.pageCount, layout.pageSize, shape.kvHeads, shape.headDim]
        return (KVCacheLayer(keys: cpu.zeros(cacheShape), values: cpu.zeros(cacheShape)),
                KVCacheLayer(keys: gpu.zeros(cacheShape), values: gpu.zeros(cacheShape)))
    }

    /// RoPE's inverse frequencies base^(−2i/d) for i < d/2, float32 on each backend.
    func inverseFrequencies(base: Double, headDim: Int) -> (Tensor, Tensor) {
        let values = (0..<headDim / 2).map { Float(1 / pow(base, Double(2 * $0) / Double(headDim))) }
        return (cpu.float32(values, shape: [values.count]), gpu.float32(values, shape: [values.count]))
    }
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
            pair.cpu.embedding(table: table.cpu, firstToken: 0, plan: plans.0, out: out.cpu)
            pair.gpu.embedding(table: table.gpu, firstToken: 0, plan: plans.1, out: out.gpu)
            pair.expectClose(out, atol: 0, "embedding")
            // A tensor-parallel rank's part of the vocabulary, tokens 2 ..< 6: other tokens' rows are zeros.
            let part = pair.tensors([4, width])
            pair.cpu.embedding(table: part.cpu, firstToken: 2, plan: plans.0, out: out.cpu)
            pair.gpu.embedding(table: part.gpu, firstToken: 2, plan: plans.1, out: out.gpu)
            pair.expectClose(out, atol: 0, "embedding of a vocabulary part")

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

            // Rows fed from a step before's sampled ids, on the device (one a NaN row's sentinel, fed as 0): the
            // embedding reads them, not the placeholders.
            var sampledLogits = [Float](repeating: 0, count: 3 * 10)
            (sampledLogits[7], sampledLogits[10 + 5], sampledLogits[20 + 2]) = (9, 9, .nan)
            let logits = sampledLogits.withUnsafeBytes { (pair.cpu.weight(from: $0.baseAddress!, dtype: .float32, shape: [3, 10]),
                                                          pair.gpu.weight(from: $0.baseAddress!, dtype: .float32, shape: [3, 10])) }
            let sampled = (pair.cpu.sample(logits.0, Array(repeating: .greedy, count: 3)), pair.gpu.sample(logits.1, Array(repeating: .greedy, count: 3)))
            let rowsFed = [(row: 1, index: 0), (row: 6, index: 1), (row: 3, index: 2)]
            let fedPlans = (pair.cpu.plan(batch), pair.gpu.plan(batch))
            pair.cpu.feed(FedTokens(source: sampled.0, rows: rowsFed), plan: fedPlans.0)
            pair.gpu.feed(FedTokens(source: sampled.1, rows: rowsFed), plan: fedPlans.1)
            #expect(fedPlans.0.batch.tokens == [3, 7, 9, 0, 1, 4, 5])
            pair.cpu.embedding(table: table.cpu, firstToken: 0, plan: fedPlans.0, out: out.cpu)
            pair.gpu.embedding(table: table.gpu, firstToken: 0, plan: fedPlans.1, out: out.gpu)
            pair.expectClose(out, atol: 0, "embedding of fed tokens")
        }

        /// Qwen2's q|k|v bias and Qwen3's per-head q/k norm on a fused q|k|v row (head dims 64 and 128).
        @Test(arguments: dtypes, [64, 128])
        func biasAndHeadRMSNorm(dtype: DType, headDim: Int) {
            var pair = Pair(dtype, seed: 9)
            let shape = AttentionShape(queryHeads: 8, kvHeads: 2, headDim: headDim)
            let rows = 5
            let qkv = pair.tensors([rows, shape.qkvWidth], scale: 3), bias = pair.tensors([shape.qkvWidth])
            pair.cpu.addBias(x: qkv.cpu, bias: bias.cpu)
            pair.gpu.addBias(x: qkv.gpu, bias: bias.gpu)
            pair.expectClose(qkv, atol: 1e-2, "add_bias")

            let gains = (pair.tensors([headDim]), pair.tensors([headDim]))
            pair.cpu.headRMSNorm(qkv: qkv.cpu, shape: shape, queryWeight: gains.0.cpu, keyWeight: gains.1.cpu, epsilon: 1e-6)
            pair.gpu.headRMSNorm(qkv: qkv.gpu, shape: shape, queryWeight: gains.0.gpu, keyWeight: gains.1.gpu, epsilon: 1e-6)
            pair.expectClose(qkv, atol: 1e-2, "head_rms_norm")
        }

        /// Gemma 2's GeGLU, embedding scale and logit soft-cap.
        @Test(arguments: dtypes)
        func geluTanhMulScaleAndSoftcap(dtype: DType) {
            var pair = Pair(dtype, seed: 10)
            let (rows, width) = (5, 300)
            let gateUp = pair.tensors([rows, 2 * width], scale: 4), activated = pair.zeros([rows, width])
            pair.cpu.geluTanhMul(gateUp: gateUp.cpu, out: activated.cpu)
            pair.gpu.geluTanhMul(gateUp: gateUp.gpu, out: activated.gpu)
            pair.expectClose(activated, atol: 1e-2, "gelu_tanh_mul")

            let x = pair.tensors([rows, width], scale: 8)
            pair.cpu.scale(x.cpu, by: 4)
            pair.gpu.scale(x.gpu, by: 4)
            pair.expectClose(x, atol: 1e-2, "scale")
            pair.cpu.softcap(x.cpu, cap: 10)
            pair.gpu.softcap(x.gpu, cap: 10)
            pair.expectClose(x, atol: 2e-2, "softcap")
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
        /// that decode splits over several blocks; with and without a sliding window; head dims 40 (RoPE a pair per
        /// thread), 64 and 128 (8 pairs per thread); 36 heads of 128 take three RoPE blocks per row, the last one partial.
        @Test(arguments: dtypes, [(64, nil, 8, 2), (128, nil, 32, 4), (128, 100, 8, 2), (40, nil, 8, 2)] as [(Int, Int?, Int, Int)])
        func ropeAppendAndPagedAttention(dtype: DType, configuration: (headDim: Int, window: Int?, queryHeads: Int, kvHeads: Int)) {
            var pair = Pair(dtype, seed: 3)
            let shape = AttentionShape(queryHeads: configuration.queryHeads, kvHeads: configuration.kvHeads, headDim: configuration.headDim,
                                       slidingWindow: configuration.window)
            let layout = PageLayout(pageSize: 16, pageCount: 200)
            let caches = pair.caches(layout, shape)
            let inverse = pair.inverseFrequencies(base: 10000.0, headDim: shape.headDim)
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
                // cos and sin scaled as LongRoPE's attention factor does.
                pair.cpu.ropeAppendKV(qkv: qkv.cpu, shape: shape, inverseFrequencies: inverse.0, scale: 1.2, cache: caches.0, layout: layout, plan: plans.0)
                pair.gpu.ropeAppendKV(qkv: qkv.gpu, shape: shape, inverseFrequencies: inverse.1, scale: 1.2, cache: caches.1, layout: layout, plan: plans.1)
                pair.expectClose(qkv, atol: 2e-2, "rope")
                pair.expectClose((caches.0.keys, caches.1.keys), atol: 2e-2, "rotated keys in the cache")
                pair.expectClose((caches.0.values, caches.1.values), atol: 2e-2, "values in the cache")
                pair.cpu.attention(qkv: qkv.cpu, shape: shape, cache: caches.0, layout: layout, plan: plans.0, out: out.cpu)
                pair.gpu.attention(qkv: qkv.gpu, shape: shape, cache: caches.1, layout: layout, plan: plans.1, out: out.gpu)
                pair.expectClose(out, atol: 2e-2, "attention step with \(rows) rows")
            }
        }

        /// RoPE at positions of 32 k and 128 k contexts, float16 (bfloat16 rounding would hide it): angles of up to 10⁵
        /// radians, where a fast-math sine (__sinf) is off by ~1e-2 and the CPU's precise one is not.
        @Test func ropeAtLongContextPositions() {
            var pair = Pair(.float16, seed: 5)
            let shape = AttentionShape(queryHeads: 4, kvHeads: 2, headDim: 128, slidingWindow: nil)
            // Only the pages the rows write exist: the last page of each block table is page 1 or 2, the others page 0.
            let layout = PageLayout(pageSize: 1024, pageCount: 3)
            let caches = pair.caches(layout, shape)
            let inverse = pair.inverseFrequencies(base: 500000.0, headDim: shape.headDim)
            let sequences = [131_068, 32_760].enumerated().map { index, cached in
                let pages = layout.pagesNeeded(forTokens: cached + 4)
                return StepBatch.Sequence(rows: 4 * index ..< 4 * index + 4, contextLength: cached + 4,
                                          blockTable: (0..<pages).map { $0 == pages - 1 ? Int32(index + 1) : 0 })
            }
            let batch = StepBatch(tokens: [Int32](repeating: 0, count: 8), sequences: sequences, loraSegments: [], logitRows: [])
            let plans = (pair.cpu.plan(batch), pair.gpu.plan(batch))
            let qkv = pair.tensors([8, shape.qkvWidth])
            pair.cpu.ropeAppendKV(qkv: qkv.cpu, shape: shape, inverseFrequencies: inverse.0, scale: 1, cache: caches.0, layout: layout, plan: plans.0)
            pair.gpu.ropeAppendKV(qkv: qkv.gpu, shape: shape, inverseFrequencies: inverse.1, scale: 1, cache: caches.1, layout: layout, plan: plans.1)
            pair.expectClose(qkv, atol: 3e-3, "rope at positions 32 760 and 131 068")
            pair.expectClose((caches.0.keys, caches.1.keys), atol: 3e-3, "rotated keys at positions 32 760 and 131 068")
        }

        /// One attention step against the CPU reference: `sequences` are (cached tokens, new rows) over pages in shuffled
        /// order. Caches are filled first by ropeAppendKV in steps of at most 4096 rows (no attention), then one step appends
        /// the new rows and runs attention, so a 32 k context costs the reference only its final rows.
        struct AttentionCase: CustomTestStringConvertible, Sendable {
            let name: String
            let queryHeads, kvHeads, headDim: Int
            var window: Int? = nil
            /// Gemma 2's score scale and soft-cap (scale, softcap).
            var scaleAndSoftcap: (Float, Float)? = nil
            var pageSize = 16
            /// The plan sends its one-row tiles to the CUDA-core decode kernel (asserted, so the case keeps testing it).
            var reachesDecodeKernel = false
            let sequences: [(cached: Int, new: Int)]
            var testDescription: String { name }
        }

        static let attentionCases: [AttentionCase] = [
            AttentionCase(name: "2048-row prompt, MHA, d128", queryHeads: 4, kvHeads: 4, headDim: 128, sequences: [(0, 2048)]),
            AttentionCase(name: "chunk after cache + decode rows, GQA 4, d64", queryHeads: 8, kvHeads: 2, headDim: 64,
                          sequences: [(1500, 300), (0, 1), (37, 1), (700, 1), (129, 1), (1000, 5)]),
            AttentionCase(name: "40 decode rows of different lengths + a chunk, GQA 8, d32", queryHeads: 16, kvHeads: 2, headDim: 32,
                          sequences: (0..<40).map { ($0 * 73 % 2900 + 1, 1) } + [(200, 64)]),
            AttentionCase(name: "sliding window 100, d16, one-token sequence", queryHeads: 4, kvHeads: 4, headDim: 16, window: 100, pageSize: 8,
                          sequences: [(500, 200), (300, 1), (0, 1), (90, 20)]),
            AttentionCase(name: "d256, GQA 2", queryHeads: 8, kvHeads: 4, headDim: 256, sequences: [(300, 130), (1000, 1), (64, 1), (0, 17)]),
            AttentionCase(name: "Gemma 2: scale 1/√24, soft-cap 2, window 50, d64", queryHeads: 8, kvHeads: 4, headDim: 64, window: 50,
                          scaleAndSoftcap: (1 / Float(24).squareRoot(), 2), sequences: [(300, 130), (1000, 1), (0, 17)]),
            AttentionCase(name: "d96 (padded to 128), GQA 4, window 333", queryHeads: 4, kvHeads: 1, headDim: 96, window: 333,
                          sequences: [(900, 77), (2000, 1), (5, 3)]),
            AttentionCase(name: "2000-row prompt after 100 cached, GQA 8, d128", queryHeads: 8, kvHeads: 1, headDim: 128, pageSize: 32,
                          sequences: [(100, 2000), (3000, 1)]),
            AttentionCase(name: "32k context: final chunk + decode rows, GQA 4, d32", queryHeads: 4, kvHeads: 1, headDim: 32,
                          sequences: [(32760, 8), (32767, 1), (20000, 1)]),
            // MHA decode rows run on the CUDA-core decode kernel once there are enough (row, head) blocks for it
            // (`AttentionDecode.pays`): 24 rows × 32 heads. 4000 keys split (flash-decoding).
            AttentionCase(name: "MHA decode rows of 1–4 000 keys + 2-token rows + a chunk, d128", queryHeads: 32, kvHeads: 32, headDim: 128, reachesDecodeKernel: true,
                          sequences: (0..<23).map { ($0 * 97 % 500, 1) } + [(4000, 1), (0, 2), (77, 2), (300, 40)]),
            AttentionCase(name: "MHA decode rows, d64, window 200, pages of 8", queryHeads: 32, kvHeads: 32, headDim: 64, window: 200, pageSize: 8, reachesDecodeKernel: true,
                          sequences: (0..<24).map { ($0 * 53 % 450, 1) }),
            AttentionCase(name: "MHA decode rows, d256, soft-cap 3", queryHeads: 32, kvHeads: 32, headDim: 256, scaleAndSoftcap: (1 / 16, 3), reachesDecodeKernel: true,
                          sequences: (0..<24).map { ($0 * 31 % 300, 1) } + [(100, 3)]),
            AttentionCase(name: "MHA decode rows, d40 (padded to 64)", queryHeads: 32, kvHeads: 32, headDim: 40, reachesDecodeKernel: true,
                          sequences: (0..<24).map { ($0 * 71 % 1200, 1) }),
        ]

        @Test(arguments: dtypes, attentionCases)
        func pagedAttentionMatchesReference(dtype: DType, configuration: AttentionCase) {
            var pair = Pair(dtype, seed: 4)
            let shape = AttentionShape(queryHeads: configuration.queryHeads, kvHeads: configuration.kvHeads, headDim: configuration.headDim,
                                       slidingWindow: configuration.window, scale: configuration.scaleAndSoftcap?.0,
                                       softcap: configuration.scaleAndSoftcap?.1)
            let totals = configuration.sequences.map { $0.cached + $0.new }
            let pagesNeeded = totals.reduce(0) { $0 + ($1 + configuration.pageSize - 1) / configuration.pageSize }
            let layout = PageLayout(pageSize: configuration.pageSize, pageCount: pagesNeeded + 9)
            let caches = pair.caches(layout, shape)
            var pages = Array(1..<Int32(layout.pageCount)).shuffled(using: &pair.random)
            let tables = totals.map { tokens in (0..<layout.pagesNeeded(forTokens: tokens)).map { _ in pages.removeLast() } }
            let inverse = pair.inverseFrequencies(base: 10000.0, headDim: shape.headDim)

            // One step over `pieces` (sequence, first position, rows): ropeAppendKV on both backends, then attention compared.
            func step(_ pieces: [(sequence: Int, first: Int, rows: Int)], attend: Bool) {
                var sequences: [StepBatch.Sequence] = []
                var rows = 0
                for piece in pieces {
                    sequences.append(.init(rows: rows ..< rows + piece.rows, contextLength: piece.first + piece.rows, blockTable: tables[piece.sequence]))
                    rows += piece.rows
                }
                let batch = StepBatch(tokens: [Int32](repeating: 0, count: rows), sequences: sequences, loraSegments: [], logitRows: [])
                let plans = (pair.cpu.plan(batch), pair.gpu.plan(batch))
                let qkv = pair.tensors([rows, shape.qkvWidth])
                pair.cpu.ropeAppendKV(qkv: qkv.cpu, shape: shape, inverseFrequencies: inverse.0, scale: 1, cache: caches.0, layout: layout, plan: plans.0)
                pair.gpu.ropeAppendKV(qkv: qkv.gpu, shape: shape, inverseFrequencies: inverse.1, scale: 1, cache: caches.1, layout: layout, plan: plans.1)
                guard attend else { return }
                if configuration.reachesDecodeKernel {
                    let work = AttentionWork(batch: batch, shape: shape, multiprocessors: pair.gpu.multiprocessorCount)
                    #expect(!work.decode.isEmpty, "the case reaches the CUDA-core decode kernel")
                }
                let out = pair.zeros([rows, shape.queryWidth])
                pair.cpu.attention(qkv: qkv.cpu, shape: shape, cache: caches.0, layout: layout, plan: plans.0, out: out.cpu)
                pair.gpu.attention(qkv: qkv.gpu, shape: shape, cache: caches.1, layout: layout, plan: plans.1, out: out.gpu)
                let (actual, expected) = (pair.gpu.toHost(out.gpu), pair.cpu.toHost(out.cpu))
                let maxError = zip(actual, expected).reduce(Float(0)) { max($0, abs($1.0 - $1.1).isNaN ? .infinity : abs($1.0 - $1.1)) }
                print("attention \(configuration.name) \(dtype): \(rows) rows, max error \(maxError)")
                let mismatch = closeMismatch(actual, expected, atol: 2e-2, rtol: pair.tolerance)
                #expect(mismatch == nil, "attention \(configuration.name) \(dtype): \(mismatch ?? "")")
            }

            var filling: [(sequence: Int, first: Int, rows: Int)] = []
            for (index, sequence) in configuration.sequences.enumerated() {
                for first in stride(from: 0, to: sequence.cached, by: 4096) {
                    filling.append((index, first, min(4096, sequence.cached - first)))
                    if filling.reduce(0, { $0 + $1.rows }) >= 4096 {
                        step(filling, attend: false)
                        filling = []
                    }
                }
            }
            if !filling.isEmpty { step(filling, attend: false) }
            step(configuration.sequences.enumerated().map { ($0.offset, $0.element.cached, $0.element.new) }, attend: true)
        }

        /// SGMV against the CPU reference: adapters of ranks 1, 7, 16, 64 and 256 in one launch, a slot
        /// without the projection, base-only rows between segments, empty segments, and a fused output of three pieces
        /// (as q|k|v, widths not multiples of 8). Segments of 1, 15, 16, 17, 100 and 4 300 rows (one 16-row tile, tiles
        /// with a partial last one, many tiles); decode-sized steps of one-row tiles; 300 short segments in multi-row tiles. Input widths
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
            // Enough short segments that their tiles keep several rows (the shrink's and expand's multi-row entry points).
            let manyShort = (0..<300).map { LoRASegment(rows: 3 * $0 ..< 3 * $0 + 1 + $0 % 3, slot: $0 % ranks.count) }
            // Long segments of the odd ranks: the tensor-core kernels' ranks that are no multiple of 16 (or of 8).
            let longOddRanks = [LoRASegment(rows: 0..<130, slot: 1), LoRASegment(rows: 130..<300, slot: 0)]
            let cases = [long, short, identical, manyShort, longOddRanks] + (inWidth == 256 ? [prefill] : [])
            for segments in cases {
                runShrinkExpand(&pair, projections: projections, segments: segments, inWidth: inWidth, widths: widths)
            }
            // Ranks up to 16 only (48 stacked): long segments of fewer than 8192 / 48 rows in all stay on the CUDA-core
            // kernels (too little work for the tensor cores': CUDAPlan.tensorCoreWork).
            let lowRanks = (projections.0.map { ($0?.rank ?? 0) <= 48 ? $0 : nil }, projections.1.map { ($0?.rank ?? 0) <= 48 ? $0 : nil })
            for segments in [long, [LoRASegment(rows: 0..<64, slot: 2)], [LoRASegment(rows: 0..<130, slot: 1)]] {
                runShrinkExpand(&pair, projections: lowRanks, segments: segments, inWidth: inWidth, widths: widths)
            }
        }

        /// Sampling on the GPU against TokenChoice.pick: greedy, temperatures, top-k, top-p, min-p, combinations, the
        /// repetition penalty, logit biases (−∞ masks, +100 forcing), subtracted penalties, ties.
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
                func tokens(_ count: Int) -> [Int32] { (0..<count).map { _ in Int32.random(in: 0..<Int32(vocab), using: &pair.random) } }
                if row % 4 == 1 {
                    for token in tokens(20) { choice.bias[token] = Float.random(in: -5...5, using: &pair.random) }
                    choice.bias[tokens(1)[0]] = -.infinity
                    if row % 8 == 1 { choice.bias[tokens(1)[0]] = 100 }
                }
                if row % 5 == 2 { for token in tokens(25) { choice.subtracted[token] = Float.random(in: -1...3, using: &pair.random) } }
                choice.minP = [0, 0.05, 0.3][row % 3 == 1 ? 1 : row % 7 == 3 ? 2 : 0]
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
            #expect(pair.gpu.sample(empty, []).ids.isEmpty && pair.gpu.toHost(empty).isEmpty)
            let expected = pair.cpu.sample(logits.0, choices).ids, sampled = pair.gpu.sample(logits.1, choices).ids
            for row in 0..<rows { #expect(sampled[row] == expected[row], "row \(row), \(choices[row]) \(dtype)") }
            #expect(pair.gpu.toHost(logits.1) == cpuLogits, "sampling must leave the logits as they were")
        }

        /// Rows the reference cannot sample (a NaN, +∞, every logit −∞) give
        /// `TokenChoice.nonFinite` on the GPU too, whatever the choice; a row with −∞ masks samples as usual, and each
        /// row's result does not depend on its neighbours.
        @Test(arguments: dtypes)
        func nonFiniteRowsGiveTheSentinel(dtype: DType) {
            var pair = Pair(dtype, seed: 6)
            let vocab = 2500
            let choices = [TokenChoice.greedy, TokenChoice(temperature: 1, topK: 40, topP: 0.9, uniform: 0.5),
                           TokenChoice(temperature: 0.7, uniform: 0.3, repetitionPenalty: 0.5, penalized: [3, 4])]
            var rows: [[Float]] = []
            for poison in 0..<5 {
                var row = pair.rounded(pair.random.floats(vocab, scale: 4))
                switch poison {
                case 0: row[1234] = .nan
                case 1: row[vocab - 1] = .infinity
                case 2: row = [Float](repeating: -.infinity, count: vocab)
                case 3: row = row.map { $0 > 3 ? -Float.infinity : $0 }  // masked tokens: samples normally
                default: row = [Float](repeating: .nan, count: vocab)
                }
                rows.append(row)
            }
            // Every row under every choice: [rows × choices, vocab].
            let flat = rows.flatMap { row in choices.flatMap { _ in row } }, choiceOfRow = rows.flatMap { _ in choices }
            let logits = flat.withUnsafeBytes { (pair.cpu.weight(from: $0.baseAddress!, dtype: .float32, shape: [choiceOfRow.count, vocab]),
                                                 pair.gpu.weight(from: $0.baseAddress!, dtype: .float32, shape: [choiceOfRow.count, vocab])) }
            let expected = pair.cpu.sample(logits.0, choiceOfRow).ids, sampled = pair.gpu.sample(logits.1, choiceOfRow).ids
            for row in choiceOfRow.indices {
                let masked = row / choices.count == 3
                #expect((expected[row] == TokenChoice.nonFinite) != masked, "row \(row)")
                if masked && choiceOfRow[row].temperature > 0 {
                    // A draw's exact token may differ in the last bits of the sums (samplingMatchesTheReference pins those).
                    #expect((0..<vocab).contains(sampled[row]), "row \(row) \(dtype)")
                } else {
                    #expect(sampled[row] == expected[row], "row \(row), \(choiceOfRow[row]) \(dtype)")
                }
            }
        }

        private func runShrinkExpand(_ pair: inout Pair, projections: ([LoRAWeights?], [LoRAWeights?]), segments: [LoRASegment],
                                     inWidth: Int, widths: [Int]) {
            let rows = segments.last!.rows.upperBound + 1
            let batch = StepBatch(tokens: [Int32](repeating: 0, count: rows), sequences: [], loraSegments: segments, logitRows: [])
            let x = pair.tensors([rows, inWidth])
            let yValues = pair.rounded(pair.random.floats(rows * widths.reduce(0, +)))
            let yShape = [rows, widths.reduce(0, +)]
            let y = yValues.withUnsafeBytes { bytes in
                (cpu: pair.cpu.weight(from: bytes.baseAddress!, dtype: .float32, shape: yShape),
                 gpu: pair.gpu.weight(from: bytes.baseAddress!, dtype: .float32, shape: yShape))
            }
            let v = (pair.cpu.float32Zeros([rows, 3 * 256]), pair.gpu.float32Zeros([rows, 3 * 256]))
            let plans = (pair.cpu.plan(batch), pair.gpu.plan(batch))
            let lora = (LoRAProjection(projections.0), LoRAProjection(projections.1))
            let before = pair.gpu.toHost(y.gpu)
            pair.cpu.loraShrink(x: x.cpu, projection: lora.0, plan: plans.0, v: v.0)
            pair.gpu.loraShrink(x: x.gpu, projection: lora.1, plan: plans.1, v: v.1)
            let label = "\(segments.count) segments over \(rows) rows, input width \(inWidth)"
            pair.expectClose(v, atol: 1e-3, "sgmv shrink (v), \(label)")
            pair.cpu.loraExpand(v: v.0, projection: lora.0, plan: plans.0, y: y.cpu)
            pair.gpu.loraExpand(v: v.1, projection: lora.1, plan: plans.1, y: y.gpu)
            pair.expectClose(y, atol: 2e-2, "sgmv shrink+expand, \(label)")
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
    /// 0.06 in float16, 0.4 in bfloat16, for logits of standard deviation 8), so tolerances are about twice that, or
    /// transformers' own error in that format where it is larger (`TransformersReducedPrecision`).
    @Suite struct CUDAModelParityTests {
        @Test(arguments: HFParity.models)
        func float16LogitsAndGreedyMatchHF(model: String) async throws {
            let gpu = GPU.backends[.float16]!
            let (logits, logprobs) = try (TransformersReducedPrecision.tolerance(model, "float16", atLeast: 0.12),
                                          TransformersReducedPrecision.tolerance(model, "float16", atLeast: 0.15))
            try HFParity.checkLogitsAtEveryPromptPosition(model, backend: gpu, atol: logits, rtol: 1e-2)
            try await HFParity.checkGreedyContinuationsInOneMixedBatch(model, backend: gpu, logprobTolerance: logprobs, exactTopOrder: false)
            try await HFParity.checkPromptLogprobs(model, backend: gpu, atol: logprobs, exactRanks: false)
        }

        /// The model split by tensor parallelism over the host's GPUs (4, 2 or 1 of them: the fixtures' 4 heads bound it),
        /// one rank per GPU, the collectives through NCCL: transformers + PEFT's logits and, through the engine, its
        /// greedy tokens, as the whole model's. On a one-GPU host the rank's all-reduces and all-gathers run through a
        /// one-rank NCCL communicator, and its decode steps are recorded with them (CUDA graphs).
        @Test(arguments: HFParity.models)
        func splitOverTheGPUsThroughNCCL(model: String) async throws {
            let ranks = [4, 2, 1].first { $0 <= (try? CUDABackend.deviceCount()) ?? 1 }!
            let backends = try [GPU.backends[.float16]!] + (1..<ranks).map { try CUDABackend(device: $0, dtype: .float16) }
            let group = try NCCLGroup(backends: backends)
            let (logits, logprobs) = try (TransformersReducedPrecision.tolerance(model, "float16", atLeast: 0.12),
                                          TransformersReducedPrecision.tolerance(model, "float16", atLeast: 0.15))
            let collectives = (0..<ranks).map(group.collectives)
            try HFParity.checkSplitLogitsAtEveryPromptPosition(model, backends: backends, collectives: collectives, atol: logits, rtol: 1e-2)
            try await HFParity.checkSplitGreedyContinuationsInOneMixedBatch(model, backends: backends, collectives: collectives,
                                                                            logprobTolerance: logprobs, exactTopOrder: false)
        }

        /// A multi-head (MHA) model's decode rows run on the CUDA-core decode kernel, which no HF fixture reaches (all are
        /// GQA, with few heads): a random checkpoint with 32 heads, loaded on the CPU backend (float32) and the GPU, 24
        /// prompts then eight decode steps, eager and replayed from a recording (CUDA graphs), the CPU's greedy tokens fed
        /// to both. Logits agree within float16 rounding at every step.
        @Test func multiHeadDecodeStepsMatchTheCPU() throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("punica-mha-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try RandomModel.writeModel(.init(hiddenSize: 1024, intermediateSize: 1024, layerCount: 2, heads: 32, kvHeads: 32, vocabularySize: 300,
                                             tieWordEmbeddings: false), to: directory, seed: 11)
            let gpu = GPU.backends[.float16]!, cpu = CPUBackend()
            let models = (try LlamaModel(directory: directory, backend: cpu), try LlamaModel(directory: directory, backend: gpu))
            let count = 24, steps = 8
            #expect(AttentionWork.decodeKernel(rows: count, shape: models.1.config.attention, multiprocessors: gpu.multiprocessorCount)
                    == AttentionDecode.self, "enough (row, head) blocks for the CUDA-core kernel")
            let layout = PageLayout(pageSize: 16, pageCount: 1 + 16 * count)
            let caches = (models.0.makeKVCache(layout: layout), models.1.makeKVCache(layout: layout), models.1.makeKVCache(layout: layout))
            let none = (ResidentAdapters([], layerCount: 2), ResidentAdapters([], layerCount: 2))
            let recordings = try #require(RecordedDecodeSteps(model: models.1, cache: caches.2, adapters: none.1, maxContext: 256, sizes: [count]))
            let tables = (0..<count).map { sequence in (0..<16).map { Int32(1 + 16 * sequence + $0) } }
            var tokens: [[Int32]] = (0..<count).map { sequence in
                let length = 1 + sequence * 37 % 200
                return (0..<length).map { Int32(($0 * 7 + sequence) % 300) }
            }
            func batch(_ newTokens: [Int]) -> StepBatch {
                var rows = 0
                let sequences = (0..<count).map { index in
                    defer { rows += newTokens[index] }
                    return StepBatch.Sequence(rows: rows ..< rows + newTokens[index], contextLength: tokens[index].count, blockTable: tables[index])
                }
                return StepBatch(tokens: zip(tokens, newTokens).flatMap { $0.suffix($1) }, sequences: sequences, loraSegments: [],
                                 logitRows: sequences.map { $0.rows.upperBound - 1 })
            }
            let prefill = batch(tokens.map(\.count))
            var expected = models.0.forward(cpu.plan(prefill), cache: caches.0, adapters: none.0)
            var actual = models.1.forward(gpu.plan(prefill), cache: caches.1, adapters: none.1)
            _ = models.1.forward(gpu.plan(prefill), cache: caches.2, adapters: none.1)
            for step in 0...steps {
                let mismatch = closeMismatch(gpu.toHost(actual), cpu.toHost(expected), atol: 3e-2, rtol: 1e-2)
                #expect(mismatch == nil, "step \(step): \(mismatch ?? "")")
                guard step < steps else { break }
                for (index, token) in cpu.sample(expected, Array(repeating: .greedy, count: count)).ids.enumerated() { tokens[index].append(Int32(token)) }
                let decode = batch([Int](repeating: 1, count: count))
                let replayed = try #require(try recordings.logits(decode), "the decode batch replays its recording")
                expected = models.0.forward(cpu.plan(decode), cache: caches.0, adapters: none.0)
                actual = models.1.forward(gpu.plan(decode), cache: caches.1, adapters: none.1)
                let replayMismatch = closeMismatch(gpu.toHost(replayed), cpu.toHost(expected), atol: 3e-2, rtol: 1e-2)
                #expect(replayMismatch == nil, "replayed step \(step): \(replayMismatch ?? "")")
            }
        }

        /// Decode steps replayed from recordings (CUDA graphs) against the same steps run eagerly, from the same prefill:
        /// five sequences (base-only and two adapters, in segments), ten decode steps, batches padded to a recorded
        /// size of 8. Greedy tokens equal at every step; logits within rounding (the recorded plans split work
        /// differently, so float32 sums may differ in their last bits).
        @Test(arguments: HFParity.models)
        func recordedDecodeStepsMatchEagerSteps(model: String) throws {
            let gpu = GPU.backends[.float16]!
            let fixture = try LoadedFixture(model, backend: gpu)
            let layout = PageLayout(pageSize: 4, pageCount: 1 + 5 * 4)
            let caches = (fixture.model.makeKVCache(layout: layout), fixture.model.makeKVCache(layout: layout))
            let resident = ResidentAdapters(Array(fixture.adapters.prefix(2)) + [nil], layerCount: fixture.model.config.layerCount,
                                            reservedRank: 48)
            let recordings = try #require(RecordedDecodeSteps(model: fixture.model, cache: caches.1, adapters: resident, maxContext: 16,
                                                              sizes: [2, 8]))
            let slots: [Int?] = [nil, 0, 0, 1, 1]
            let tables = (0..<5).map { sequence in (0..<4).map { Int32(1 + 4 * sequence + $0) } }
            var tokens = (0..<5).map { sequence in (0..<6).map { Int32((7 * sequence + 3 * $0) % fixture.model.config.vocabularySize) } }
            func batch(newTokens: Int) -> StepBatch {
                var segments: [LoRASegment] = []
                let sequences = (0..<5).map { index in
                    StepBatch.Sequence(rows: index * newTokens ..< (index + 1) * newTokens, contextLength: tokens[index].count, blockTable: tables[index])
                }
                for (index, sequence) in sequences.enumerated() {
                    if let slot = slots[index] { segments.append(rows: sequence.rows, slot: slot) }
                }
                return StepBatch(tokens: tokens.flatMap { $0.suffix(newTokens) }, sequences: sequences, loraSegments: segments,
                                 logitRows: sequences.map { $0.rows.upperBound - 1 })
            }
            let prefill = batch(newTokens: 6)
            var next = gpu.sample(fixture.model.forward(gpu.plan(prefill), cache: caches.0, adapters: resident), Array(repeating: .greedy, count: 5)).ids
            _ = fixture.model.forward(gpu.plan(prefill), cache: caches.1, adapters: resident)
            for step in 0..<10 {
                for (index, token) in next.enumerated() { tokens[index].append(Int32(token)) }
                let decode = batch(newTokens: 1)
                let eager = fixture.model.forward(gpu.plan(decode), cache: caches.0, adapters: resident)
                let replayed = try #require(try recordings.logits(decode), "a decode batch of 5 replays the size-8 recording")
                #expect(replayed.rows == 8)
                let vocabulary = fixture.model.config.vocabularySize
                let expected = gpu.toHost(eager), actual = Array(gpu.toHost(replayed).prefix(5 * vocabulary))
                let mismatch = closeMismatch(actual, expected, atol: 2e-2, rtol: 2e-3)
                #expect(mismatch == nil, "step \(step): \(mismatch ?? "")")
                next = gpu.sample(eager, Array(repeating: .greedy, count: 5)).ids
                let fromReplay = Array(gpu.sample(replayed, Array(repeating: .greedy, count: 8)).ids.prefix(5))
                #expect(fromReplay == next, "step \(step)")
            }
            #expect(recordings.count == 1, "one recording (size 8, with LoRA), made once and replayed ten times")
        }

        @Test(arguments: HFParity.models)
        func bfloat16LogitsMatchHF(model: String) throws {
            let tolerance = try TransformersReducedPrecision.tolerance(model, "bfloat16", atLeast: 0.8)
            try HFParity.checkLogitsAtEveryPromptPosition(model, backend: GPU.backends[.bfloat16]!, atol: tolerance, rtol: 5e-2)
        }
    }
}
