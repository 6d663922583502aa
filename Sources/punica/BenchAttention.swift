import ArgumentParser
import PunicaCUDA
import PunicaCompute

/// `punica bench attention`: the attention op alone on CUDA (one layer), prefill and decode, against its roofline:
/// causal FLOPs at the measured GEMM rate, or the KV bytes it must read at the measured copy bandwidth.
struct BenchAttention: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Microseconds of one layer's paged attention on CUDA (prefill and decode), TFLOP/s, GB/s and the multiple of the roofline.")

    @Option(help: "Storage type: float16 or bfloat16.") var dtype = "float16"
    @Option(parsing: .upToNextOption, help: "Head layouts as queryHeads/kvHeads/headDim.") var shape: [String] = ["32/32/128", "32/8/128"]
    @Option(parsing: .upToNextOption, help: "Prompt lengths of batch-1 prefill.") var prefill: [Int] = [128, 512, 2048, 4096, 8192]
    @Option(parsing: .upToNextOption, help: "Decode batch sizes.") var batch: [Int] = [1, 8, 32, 128]
    @Option(parsing: .upToNextOption, help: "Decode context lengths.") var context: [Int] = [512, 4096, 16384, 32768]
    @Option(help: "Distinct cache tokens; sequences beyond share pages (each still reads its whole context).") var cacheTokens = 1 << 19
    @Option(help: "Timed iterations per configuration (median reported).") var iterations = 20

    func run() throws {
        let gpu = try CUDABackend(dtype: try DeviceOptions.parse(["--dtype", dtype]).storageType)
        let bandwidth = try gpu.measureCopyBandwidth()
        let gemmRate = try measureGEMMRate(gpu)
        print("device: \(gpu.name); copy bandwidth \(fixed(bandwidth / 1e12, 2)) TB/s (read + write); cuBLAS GEMM 8192³ "
              + "\(fixed(gemmRate / 1e12, 0)) TFLOP/s; median of \(iterations) CUDA-event timings; page size 16")
        print("| heads q/kv/d | case | rows | context | µs | TFLOP/s | GB/s | roofline µs | × roofline |")
        print("|---|---|---|---|---|---|---|---|---|")
        for text in shape {
            let parts = text.split(separator: "/").compactMap { Int($0) }
            guard parts.count == 3, parts[0] % parts[1] == 0 else {
                throw ValidationError("--shape \(text): expected QUERY/KV/HEAD_DIM with QUERY a multiple of KV, e.g. 32/8/128")
            }
            let heads = AttentionShape(queryHeads: parts[0], kvHeads: parts[1], headDim: parts[2])
            let layout = PageLayout(pageSize: 16, pageCount: cacheTokens / 16 + 1)
            let cacheShape = [layout.pageCount, layout.pageSize, heads.kvHeads, heads.headDim]
            let cache = KVCacheLayer(keys: gpu.randomWeight(shape: cacheShape, scale: 1, seed: 1),
                                     values: gpu.randomWeight(shape: cacheShape, scale: 1, seed: 2))
            var cases: [(name: String, sequences: [(cached: Int, new: Int)])] = prefill.map { ("prefill", [(0, $0)]) }
            cases.append(("prefill 32 × 128", Array(repeating: (0, 128), count: 32)))
            for b in batch { for c in context { cases.append(("decode batch \(b)", Array(repeating: (c - 1, 1), count: b))) } }
            for (name, sequences) in cases {  // every sequence of a case has the same length
                // Pages in a scattered order, wrapping around the cache when the batch needs more than it holds.
                var nextPage = 0
                var rows = 0
                var steps: [StepBatch.Sequence] = []
                for sequence in sequences {
                    let total = sequence.cached + sequence.new
                    let table = (0..<layout.pagesNeeded(forTokens: total)).map { _ in
                        defer { nextPage += 1 }
                        return Int32(1 + (nextPage * 7919) % (layout.pageCount - 1))
                    }
                    steps.append(.init(rows: rows ..< rows + sequence.new, contextLength: total, blockTable: table))
                    rows += sequence.new
                }
                let plan = gpu.plan(StepBatch(tokens: [Int32](repeating: 0, count: rows), sequences: steps, loraSegments: [], logitRows: []))
                let qkv = gpu.randomWeight(shape: [rows, heads.qkvWidth], scale: 1, seed: 3), out = gpu.zeros([rows, heads.queryWidth])
                let times = try gpu.eventTimes(iterations: iterations, warmup: 3) {
                    gpu.attention(qkv: qkv, shape: heads, cache: cache, layout: layout, plan: plan, out: out)
                }
                // Causal FLOPs: q·k and p·v, 2 · headDim each, per (row, query head, visible key). Bytes: each sequence's
                // K and V once per KV head, q read and out written.
                var flops = 0.0, bytes = 0.0
                for sequence in sequences {
                    let visible = (0..<sequence.new).reduce(0) { $0 + sequence.cached + $1 + 1 }
                    flops += 4 * Double(heads.headDim * heads.queryHeads) * Double(visible)
                    bytes += Double(4 * heads.kvWidth * (sequence.cached + sequence.new) + 4 * heads.queryWidth * sequence.new)
                }
                let measured = median(times)
                let roofline = max(flops / gemmRate, bytes / bandwidth) * 1e6
                print("| \(heads.queryHeads)/\(heads.kvHeads)/\(heads.headDim) | \(name) | \(rows) | \(sequences[0].cached + sequences[0].new) | \(fixed(measured, 1)) | "
                      + "\(fixed(flops / measured / 1e6, 1)) | \(fixed(bytes / measured / 1e3, 0)) | \(fixed(roofline, 1)) | \(fixed(measured / roofline, 2)) |")
            }
        }
    }

    /// FLOP/s of one cuBLAS GEMM, 8192 × 8192 × 8192: the compute roofline.
    private func measureGEMMRate(_ gpu: CUDABackend) throws -> Double {
        let n = 8192
        let x = gpu.randomWeight(shape: [n, n], scale: 0.01, seed: 5), w = gpu.randomWeight(shape: [n, n], scale: 0.01, seed: 6)
        let out = gpu.zeros([n, n])
        let times = try gpu.eventTimes(iterations: 10, warmup: 2) { gpu.matmul(x: x, weight: w, out: out) }
        return 2 * Double(n * n) * Double(n) / (median(times) * 1e-6)
    }
}
