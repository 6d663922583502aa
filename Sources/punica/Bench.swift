import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCPU
import PunicaCUDA
import PunicaCompute
import PunicaEngine
import PunicaModel

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks (commands, not tests): the numbers in docs/PERFORMANCE.md.",
        subcommands: [BenchForward.self, BenchLoRA.self, BenchAttention.self, BenchEngine.self, BenchAdapters.self, BenchTextgen.self])
}

/// Model shapes of the benchmarks, with random weights.
enum BenchShape: String, ExpressibleByArgument, CaseIterable {
    case llama15m = "llama-15m", llama110m = "llama-110m", llama7b = "llama-7b", llama70b = "llama-70b"

    var config: ModelConfig {
        switch self {
        // llama2.c's stories15M and stories110M, the CPU peers' configurations.
        case .llama15m: .llama(hiddenSize: 288, intermediateSize: 768, layers: 6, heads: 6, kvHeads: 6, vocabularySize: 32000, tieWordEmbeddings: true)
        case .llama110m: .llama(hiddenSize: 768, intermediateSize: 2048, layers: 12, heads: 12, kvHeads: 12, vocabularySize: 32000, tieWordEmbeddings: true)
        case .llama7b: .llama(hiddenSize: 4096, intermediateSize: 11008, layers: 32, heads: 32, kvHeads: 32, vocabularySize: 32000, tieWordEmbeddings: false)
        // Llama-2-70B: 140 GB of 16-bit weights, so at least two H200s (--tensor-parallel-size).
        case .llama70b: .llama(hiddenSize: 8192, intermediateSize: 28672, layers: 80, heads: 64, kvHeads: 8, vocabularySize: 32000, tieWordEmbeddings: false)
        }
    }
}

extension Popularity: ExpressibleByArgument {}

/// `punica bench forward`: prefill and decode throughput of the forward pass on a random-weight Llama, without LoRA
/// and with a rank-r LoRA on all seven projections for every request, adapters spread by popularity.
struct BenchForward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Prefill and decode tokens/s of a random-weight Llama, with and without per-request LoRA adapters.")

    @OptionGroup var device: DeviceOptions
    @Option(help: "Model shape: \(BenchShape.allCases.map(\.rawValue).joined(separator: ", ")).") var shape = BenchShape.llama15m
    @Option(parsing: .upToNextOption, help: "Batch sizes (concurrent requests).") var batch: [Int] = [1, 8]
    @Option(parsing: .upToNextOption, help: "Adapter popularities: distinct, uniform, skewed, identical.") var popularity: [Popularity] = [.distinct]
    @Option(help: "LoRA rank of every adapter.") var rank = 16
    @Option(help: "Prompt tokens per request.") var promptTokens = 128
    @Option(help: "Decode steps.") var decodeTokens = 64
    @Option(help: "Timed repetitions of each configuration; the median is reported.") var repeats = 3
    @Flag(help: "Run decode steps eagerly instead of replaying recorded ones (CUDA graphs).") var enforceEager = false
    @OptionGroup var parallel: ParallelOptions

    func run() throws {
        let (backends, collectives) = try device.makeRanks(parallel.tensorParallelSize)
        let backend = backends[0]
        let config = shape.config
        let model = try TensorParallelModel(random: config, backends: backends, collectives: collectives)
        let needed = batch.map { b in popularity.map { $0.requestsPerAdapter(b).count }.max() ?? 0 }.max() ?? 0
        let adapters = model.ranks.map { rank in
            (0..<needed).map {
                LoRAAdapter.random(name: "a\($0)", rank: self.rank, targets: Set(Projection.of(config)), config: config, backend: rank.backend,
                                   seed: UInt64($0 + 1), shard: rank.shard)
            }
        }
        let adapterBytes = model.ranks[0].adapterBytes(rank: rank)  // one rank's part of one adapter
        // A GPU's roofline is its copy bandwidth; the CPU's, how fast a GEMV reads a matrix far larger than the caches.
        let bandwidth = (backend as? CUDABackend).flatMap { try? $0.measureCopyBandwidth() } ?? (backend as? CPUBackend)?.measureReadBandwidth()
        let ranks = model.ranks.count
        print("backend: \(backend.name)\(ranks > 1 ? " × \(ranks) ranks (tensor parallel; roofline: one rank's share of the bytes)" : ""); "
              + "\(shape.rawValue) (\(config.parameterCount / 1_000_000)M parameters); prompt \(promptTokens); "
              + "decode \(decodeTokens); LoRA rank \(rank) on all 7 projections"
              + (bandwidth.map { backend is CUDABackend ? "; copy bandwidth \(fixed($0 / 1e12, 2)) TB/s" : "; read bandwidth \(fixed($0 / 1e9, 1)) GB/s" } ?? ""))
        print("| batch | LoRA | prefill tok/s | decode tok/s | decode step ms | host ms |" + (bandwidth != nil ? " step / roofline |" : "")
              + (collectives != nil ? " all-reduces of a step |" : ""))
        print("|---|---|---|---|---|---|" + (bandwidth != nil ? "---|" : "") + (collectives != nil ? "---|" : ""))
        for size in batch {
            let reduce = collectives.map { allReduceSeconds(model, $0, rows: size) }
            let workloads: [(String, [Int]?)] = [("none", nil)] + popularity.map { ($0.rawValue, $0.adapterIndices(requests: size)) }
            for (label, assignment) in workloads {
                // One untimed run first: buffer pools, cuBLAS's per-shape setup and caches warm up outside the numbers.
                let runs = (0...repeats).map { _ in measure(model, adapters: adapters, batch: size, assignment: assignment) }.dropFirst()
                let prefill = median(runs.map(\.prefill)), decode = median(runs.map(\.decode))
                let step = decode / Double(decodeTokens), host = median(runs.map(\.decodeHost)) / Double(decodeTokens)
                var line = "| \(size) | \(label) | \(fixed(Double(size * promptTokens) / prefill, 0)) | "
                    + "\(fixed(Double(size * decodeTokens) / decode, 1)) | \(fixed(1000 * step, 2)) | \(fixed(1000 * host, 2)) |"
                if let bandwidth {
                    // Bytes a decode step must read: weights, the KV cache at mid-decode, each distinct adapter once.
                    let kv = size * (promptTokens + decodeTokens / 2) * model.ranks[0].kvBytesPerToken
                    let distinct = Set(assignment ?? []).count
                    let bytes = Double(model.ranks[0].decodeWeightBytes + kv + distinct * adapterBytes)
                    line += " \(fixed(step / (bytes / bandwidth), 2))× |"
                }
                if let reduce { line += " \(fixed(1000 * reduce, 2)) ms = \(fixed(100 * reduce / step, 1)) % |" }
                print(line)
            }
        }
    }

    /// Seconds of one decode step's all-reduces run alone (the embedding's, then o's and down's in every layer, each of
    /// [rows, hidden]), on every rank at once and waited for: the median of `repeats` after a warm-up.
    private func allReduceSeconds(_ model: TensorParallelModel, _ collectives: [Collectives], rows: Int) -> Double {
        let tensors = model.ranks.map { $0.backend.zeros([rows, model.config.hiddenSize]) }
        let probes = model.ranks.map { $0.backend.zeros([1]) }  // reading one waits for the rank's device
        let clock = ContinuousClock()
        let times = (0...repeats).map { _ in
            clock.measure {
                _ = model.onEveryRank { index, rank in
                    for _ in 0 ..< 1 + 2 * model.config.layerCount { collectives[index].allReduceSum(tensors[index]) }
                    return rank.backend.toHost(probes[index])
                }
            }.seconds
        }
        return median(Array(times.dropFirst()))
    }

    /// Seconds for the prefill of every prompt (one step) and for all decode steps (greedy on the device), and of
    /// the decode time, how long the host spent issuing the forward passes: near the step time means host-bound.
    private func measure(_ model: TensorParallelModel, adapters: [[LoRAAdapter]], batch: Int, assignment: [Int]?)
        -> (prefill: Double, decode: Double, decodeHost: Double)
    {
        let layout = PageLayout(pageSize: 16, pageCount: 1 + batch * ((promptTokens + decodeTokens + 15) / 16))
        let caches = model.makeKVCaches(layout: layout)
        let pagesPerSequence = layout.pagesNeeded(forTokens: promptTokens + decodeTokens)
        let blockTables = (0..<batch).map { index in (0..<pagesPerSequence).map { Int32(1 + index * pagesPerSequence + $0) } }
        // Slot i holds adapter i; requests are already grouped by adapter, so each run of equal slots is a segment.
        let resident = adapters.map { assignment == nil ? ResidentAdapters.none : ResidentAdapters($0, layerCount: model.config.layerCount) }
        var random = SplitMix64(seed: 7)
        var tokens = (0..<batch).map { _ in (0..<promptTokens).map { _ in Int32.random(in: 3..<Int32(model.config.vocabularySize), using: &random) } }
        // Decode steps replay recordings made here, before the clock starts (at the first and last decode contexts); a
        // split model's run eagerly.
        let recordings = enforceEager || model.ranks.count > 1 ? nil
            : RecordedDecodeSteps(model: model.ranks[0], cache: caches[0], adapters: resident[0], maxContext: promptTokens + decodeTokens,
                                  sizes: [batch])
        for context in [promptTokens + 1, promptTokens + decodeTokens] { _ = try? recordings?.recordAll(context: context) }

        let clock = ContinuousClock()
        var hostTime = Duration.zero
        func step(newTokens: Int, context: Int) {
            let sequences = (0..<batch).map { index in
                StepBatch.Sequence(rows: index * newTokens ..< (index + 1) * newTokens, contextLength: context, blockTable: blockTables[index])
            }
            var segments: [LoRASegment] = []
            for (index, sequence) in sequences.enumerated() {
                if let slot = assignment?[index] { segments.append(rows: sequence.rows, slot: slot) }
            }
            let start = clock.now
            let stepBatch = StepBatch(tokens: tokens.flatMap { $0.suffix(newTokens) }, sequences: sequences, loraSegments: segments,
                                      logitRows: sequences.map { $0.rows.upperBound - 1 })
            let replayed = newTokens == 1 ? (try? recordings?.logits(stepBatch)) ?? nil : nil
            let logits = replayed ?? model.forward(stepBatch, caches: caches, adapters: resident)
            hostTime += clock.now - start
            let sampled = model.ranks[0].backend.sample(logits, Array(repeating: .greedy, count: batch))
            for (index, token) in sampled.ids.enumerated() { tokens[index].append(Int32(token)) }
        }
        let prefill = clock.measure { step(newTokens: promptTokens, context: promptTokens) }
        let hostAfterPrefill = hostTime
        let decode = clock.measure {
            for generated in 1...decodeTokens { step(newTokens: 1, context: promptTokens + generated) }
        }
        return (prefill.seconds, decode.seconds, (hostTime - hostAfterPrefill).seconds)
    }
}

/// `punica bench lora`: the SGMV shrink + expand of one projection on the GPU, by rank, batch and popularity, against
/// the bytes it must move and, where measured, vLLM's Triton LoRA ops.
struct BenchLoRA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora",
        abstract: "Microseconds of one projection's LoRA delta (SGMV shrink + expand) on CUDA, and its multiple of the roofline.")

    @Option(help: "Storage type: float16 or bfloat16.") var dtype = "float16"
    @Option(parsing: .upToNextOption, help: "Projections as in×out.") var projection: [String] = ["4096x4096", "4096x11008", "11008x4096"]
    @Option(parsing: .upToNextOption, help: "LoRA ranks.") var rank: [Int] = [16, 64]
    @Option(parsing: .upToNextOption, help: "Rows (tokens) of the batch.") var batch: [Int] = [1, 8, 32, 64, 128, 256]
    @Option(parsing: .upToNextOption, help: "Adapter popularities.") var popularity: [Popularity] = Popularity.allCases
    @Option(help: "Timed replays per configuration (median reported).") var iterations = 50

    /// Calls per recording: one call's launches alone would leave the replay's start and end in the timing.
    static let repeats = 20

    /// Microseconds of one call of `body` on the GPU alone, as vLLM times its ops: `repeats` calls recorded as one CUDA
    /// graph (after an eager call that sets up what they need), replayed. `output`: a tensor the calls write.
    func replayedMicroseconds(_ gpu: CUDABackend, output: Tensor, _ body: () -> Void) throws -> Double {
        body()
        let recording = try gpu.record {
            for _ in 0..<Self.repeats { body() }
            return output
        }
        return median(try gpu.eventTimes(iterations: iterations, warmup: 3) { recording.replay() }) / Double(Self.repeats)
    }

    func run() throws {
        let gpu = try CUDABackend(dtype: try DeviceOptions.parse(["--dtype", dtype]).storageType)
        let bandwidth = try gpu.measureCopyBandwidth()
        print("device: \(gpu.name); copy bandwidth \(fixed(bandwidth / 1e12, 2)) TB/s (read + write); µs: \(Self.repeats) calls recorded as "
              + "one CUDA graph, median of \(iterations) replays (CUDA events), divided by \(Self.repeats)")
        print("vLLM: 0.33's Triton lora_shrink + lora_expand measured on an NVIDIA H200 as CUDA-graph replays, float16, 4096×4096 only "
              + "(../shared/ARCHITECTURE.md); not re-measured by this command")
        print("| in×out | rank | batch | popularity | adapters | µs | roofline µs | × roofline | base GEMM µs | vLLM µs (H200) | × vLLM |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for shape in projection {
            let parts = shape.split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2 else { throw ValidationError("--projection \(shape): expected IN x OUT, e.g. 4096x4096") }
            let (inWidth, outWidth) = (parts[0], parts[1])
            let weight = gpu.randomWeight(shape: [outWidth, inWidth], scale: 0.02, seed: 1)
            for r in rank {
                let maxAdapters = batch.max() ?? 1
                let adapters: [LoRAWeights?] = (0..<maxAdapters).map { (index: Int) -> LoRAWeights? in
                    let seed = UInt64(2 * index + 10)
                    let a = gpu.randomWeight(shape: [r, inWidth], scale: 0.02, seed: seed)
                    let b = gpu.randomWeight(shape: [outWidth, r], scale: 0.02, seed: seed + 1)
                    return LoRAWeights(a: a, pieces: [LoRAWeights.Piece(b: b, rankOffset: 0, outputOffset: 0)])
                }
                let table = LoRAProjection(adapters)
                for rows in batch {
                    let x = gpu.randomWeight(shape: [rows, inWidth], scale: 1, seed: 3), y = gpu.zeros([rows, outWidth])
                    let v = gpu.float32Zeros([rows, r])
                    let baseMicroseconds = try replayedMicroseconds(gpu, output: y) { gpu.matmul(x: x, weight: weight, out: y) }
                    for workload in popularity {
                        let counts = workload.requestsPerAdapter(rows)
                        var segments: [LoRASegment] = []
                        for (slot, count) in counts.enumerated() {
                            let start = segments.last?.rows.upperBound ?? 0
                            segments.append(LoRASegment(rows: start ..< start + count, slot: slot))
                        }
                        let plan = gpu.plan(StepBatch(tokens: [Int32](repeating: 0, count: rows), sequences: [], loraSegments: segments, logitRows: []))
                        let measured = try replayedMicroseconds(gpu, output: y) {
                            gpu.loraShrink(x: x, projection: table, plan: plan, v: v)
                            gpu.loraExpand(v: v, projection: table, plan: plan, y: y)
                        }
                        // x read, each distinct adapter's A and B read, v written and read (float32), y read and written.
                        let adapterBytes: Int = counts.count * 2 * r * (inWidth + outWidth)
                        let activationBytes: Int = 2 * rows * inWidth + 8 * rows * r + 4 * rows * outWidth
                        let bytes = adapterBytes + activationBytes
                        let roofline = Double(bytes) / bandwidth * 1e6
                        let peer = inWidth == 4096 && outWidth == 4096 ? vLLMMeasured[r]?[rows]?[workload] : nil
                        print("| \(inWidth)×\(outWidth) | \(r) | \(rows) | \(workload.rawValue) | \(counts.count) | \(fixed(measured, 1)) | "
                              + "\(fixed(roofline, 1)) | \(fixed(measured / roofline, 2)) | \(fixed(baseMicroseconds, 1)) | "
                              + "\(peer.map { fixed($0, 1) } ?? "—") | \(peer.map { fixed(measured / $0, 2) } ?? "—") |")
                    }
                }
            }
        }
    }
}

/// vLLM 0.33's Triton LoRA ops (lora_shrink + lora_expand, default configs) on one NVIDIA H200, timed as CUDA-graph
/// replays, float16, one 4096→4096 projection, µs by rank, rows and popularity: measured once by a peer session
/// (../shared/ARCHITECTURE.md, "What to beat on the GPU"), printed beside ours, not measured here.
let vLLMMeasured: [Int: [Int: [Popularity: Double]]] = [
    16: [1: [.identical: 9.0, .uniform: 9.3, .skewed: 9.3, .distinct: 9.3],
         8: [.identical: 7.9, .uniform: 8.6, .skewed: 9.7, .distinct: 10.4],
         32: [.identical: 8.7, .uniform: 9.9, .skewed: 10.6, .distinct: 21.6],
         64: [.identical: 8.6, .uniform: 10.7, .skewed: 11.7, .distinct: 38.1],
         128: [.identical: 12.3, .uniform: 15.2, .skewed: 14.4, .distinct: 54.8],
         256: [.identical: 12.0, .uniform: 18.3, .skewed: 17.5, .distinct: 127.1]],
    64: [32: [.identical: 10.0, .uniform: 14.3, .skewed: 15.6, .distinct: 41.0],
         128: [.identical: 12.8, .uniform: 17.5, .skewed: 17.9, .distinct: 98.0],
         256: [.identical: 13.6, .uniform: 23.1, .skewed: 21.6, .distinct: 197.9]],
]

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

/// `value` with `digits` decimals (String(format:) needs full Foundation).
func fixed(_ value: Double, _ digits: Int) -> String {
    let scale = (0..<digits).reduce(1.0) { result, _ in result * 10 }
    let rounded = (value * scale).rounded() / scale
    guard digits > 0 else { return String(Int(rounded)) }
    let text = String(rounded)
    let decimals = text.split(separator: ".").last?.count ?? 0
    return text + String(repeating: "0", count: max(0, digits - decimals))
}
