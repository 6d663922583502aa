import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute
import PunicaModel

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks (commands, not tests): numbers for docs/PERFORMANCE.md.",
        subcommands: [BenchForward.self])
}

/// `punica bench forward`: prefill and decode throughput of the forward pass on a random-weight Llama, without
/// LoRA and with a LoRA on all seven projections for every request, each request its own adapter (Distinct).
struct BenchForward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Prefill and decode tokens/s of a random-weight Llama, with and without per-request LoRA adapters.")

    @Option(help: "Model shape: llama-15m or llama-110m.") var shape = "llama-15m"
    @Option(help: "Concurrent requests (rows of each decode step).") var batch = 1
    @Option(help: "LoRA rank of every adapter.") var rank = 16
    @Option(help: "Prompt tokens per request.") var promptTokens = 128
    @Option(help: "Decode steps.") var decodeTokens = 64
    @Option(help: "Timed repetitions; the median is reported.") var repeats = 3
    @Option(help: "Where random checkpoints are written (reused across runs).") var cache = "/tmp/punica-bench"
    @Option(help: "Where to run: cpu.") var device = "cpu"

    func run() throws {
        let shapes = ["llama-15m": RandomModel.Shape.llama15M, "llama-110m": RandomModel.Shape.llama110M]
        guard let modelShape = shapes[shape] else { throw ValidationError("--shape \(shape): expected one of \(shapes.keys.sorted())") }
        let directory = "\(cache)/\(shape)"
        if !FileManager.default.fileExists(atPath: directory + "/model.safetensors") {
            try RandomModel.writeModel(modelShape, to: directory)
        }
        let backend = try ModelOptions.parse(["--device", device]).makeBackend()
        let model = try LlamaModel(directory: directory, backend: backend)
        let adapters = try (0..<batch).map { index in
            let adapterDirectory = "\(directory)/adapter-r\(rank)-\(index)"
            if !FileManager.default.fileExists(atPath: adapterDirectory + "/adapter_model.safetensors") {
                try RandomModel.writeAdapter(forModel: directory, rank: rank, alpha: Double(2 * rank), targets: Projection.allCases,
                                             to: adapterDirectory, seed: UInt64(index + 1))
            }
            return try LoRAAdapter(name: "a\(index)", directory: adapterDirectory, config: model.config, backend: backend)
        }
        print("backend: \(backend.name); \(shape); batch \(batch); prompt \(promptTokens); decode \(decodeTokens); rank \(rank)")
        print("| LoRA | prefill tok/s | decode tok/s | decode step ms |")
        print("|---|---|---|---|")
        for (label, resident) in [("none", ResidentAdapters([], layerCount: 0)),
                                  ("r\(rank) distinct ×\(batch)", ResidentAdapters(adapters, layerCount: model.config.layerCount))] {
            var prefill: [Double] = []
            var decode: [Double] = []
            for _ in 0..<repeats {
                let (p, d) = measure(model, resident, withLoRA: !resident.adapters.isEmpty)
                prefill.append(p)
                decode.append(d)
            }
            let (prefillSeconds, decodeSeconds) = (median(prefill), median(decode))
            let rows = Double(batch)
            print("| \(label) | \(fixed(rows * Double(promptTokens) / prefillSeconds, 0)) | "
                + "\(fixed(rows * Double(decodeTokens) / decodeSeconds, 1)) | \(fixed(1000 * decodeSeconds / Double(decodeTokens), 2)) |")
        }
    }

    /// Seconds for the prefill of every prompt (one step) and for all decode steps (greedy, argmax on the host).
    private func measure(_ model: LlamaModel, _ adapters: ResidentAdapters, withLoRA: Bool) -> (Double, Double) {
        let layout = PageLayout(pageSize: 16, pageCount: 1 + batch * ((promptTokens + decodeTokens + 15) / 16))
        let cache = model.makeKVCache(layout: layout)
        let pagesPerSequence = layout.pagesNeeded(forTokens: promptTokens + decodeTokens)
        let blockTables = (0..<batch).map { index in (0..<pagesPerSequence).map { Int32(1 + index * pagesPerSequence + $0) } }
        var random = SplitMix64(seed: 7)
        var tokens = (0..<batch).map { _ in (0..<promptTokens).map { _ in Int32.random(in: 3..<Int32(model.config.vocabularySize), using: &random) } }

        func step(newTokens: Int, context: Int) -> [Float] {
            let sequences = (0..<batch).map { index in
                StepBatch.Sequence(rows: index * newTokens ..< (index + 1) * newTokens, contextLength: context, blockTable: blockTables[index])
            }
            let batchTokens = tokens.flatMap { $0.suffix(newTokens) }
            let segments = withLoRA ? sequences.enumerated().map { LoRASegment(rows: $1.rows, slot: $0) } : []
            return model.forward(StepBatch(tokens: batchTokens, sequences: sequences, loraSegments: segments,
                                           logitRows: sequences.map { $0.rows.upperBound - 1 }), cache: cache, adapters: adapters)
        }
        func appendArgmax(_ logits: [Float]) {
            let vocabulary = model.config.vocabularySize
            for index in 0..<batch {
                let row = logits[index * vocabulary ..< (index + 1) * vocabulary]
                tokens[index].append(Int32(row.indices.max { row[$0] < row[$1] }! - index * vocabulary))
            }
        }
        let clock = ContinuousClock()
        let prefillStart = clock.now
        appendArgmax(step(newTokens: promptTokens, context: promptTokens))
        let prefill = clock.now - prefillStart
        let decodeStart = clock.now
        for generated in 1...decodeTokens { appendArgmax(step(newTokens: 1, context: promptTokens + generated)) }
        let decode = clock.now - decodeStart
        return (prefill.seconds, decode.seconds)
    }
}

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

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
