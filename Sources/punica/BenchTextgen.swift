import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PunicaCompute
import PunicaEngine
import PunicaModel
import PunicaTokenizer

/// The ways of serving one multi-adapter workload that Punica's text-generation benchmark compares, all with this
/// engine, so only the way of serving differs.
enum ServingSystem: String, CaseIterable {
    /// Every request in one batch; each adapter's rows are a segment of the SGMV LoRA ops (Punica).
    case batched
    /// Each adapter's requests as a batch of their own, one adapter after another: a server that cannot batch
    /// different adapters together.
    case perAdapter = "per_adapter"
    /// For each adapter in turn, a copy of the model with that adapter merged into its weights serves the adapter's
    /// requests: a deployment of one fine-tuned model per adapter.
    case merged
    /// The base model alone serves every request in one batch: no LoRA work at all, the upper bound.
    case base

    var label: String {
        switch self {
        case .batched: "Punica: one batch"
        case .perAdapter: "Per-adapter batches"
        case .merged: "Merged weights"
        case .base: "Base model, no LoRA"
        }
    }

    var color: RGB {
        switch self {
        case .batched: RGB(0xD1495B)
        case .perAdapter: RGB(0x2E86AB)
        case .merged: RGB(0x66A182)
        case .base: RGB(0x9A9A9A)
        }
    }
}

/// `punica bench textgen`: Punica's text-generation benchmark. One workload of `--batch-size` requests (seeded
/// prompt and output lengths, greedy, end-of-sequence ignored) spread over adapters by each popularity, served by
/// each `ServingSystem`; reports generated tokens/s.
struct BenchTextgen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "textgen",
        abstract: "Punica's text-generation benchmark: tokens/s of one batch across adapters vs per-adapter batches, merged weights and the base model.",
        discussion: """
        Adapters: the model's own, registered again under new names (each name is loaded as a separate adapter) when a \
        popularity needs more; with --shape, one random adapter of --rank on all seven projections, likewise. Timed: \
        serving only; engines are started, adapters loaded, merged models built and one warm-up request run per \
        adapter before the clock starts. Writes textgen.json, textgen.csv and textgen.png (the chart) to --out.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Random weights of this shape instead of --model (whose tokenizer the engine still uses).")
    var shape: BenchShape?
    @Option(help: "LoRA rank of the random adapter (with --shape).") var rank = 16
    @Option(help: "Requests in the workload, all submitted at once.") var batchSize = 32
    @Option(parsing: .upToNextOption, help: "Adapter popularities: distinct, uniform, skewed, identical.")
    var popularity: [Popularity] = Popularity.allCases
    @Option(help: "Prompt tokens per request: N, or LOW-HIGH (uniform).") var promptTokens = LengthDistribution(16...64)
    @Option(help: "Generated tokens per request: N, or LOW-HIGH (uniform).") var maxTokens = LengthDistribution(32...64)
    @Option(help: "Seed of the prompts and lengths.") var seed: UInt64 = 0
    @Option(help: "Timed runs of each system and popularity; the median is reported.") var repeats = 3
    @Option(help: "Directory for textgen.json, textgen.csv and textgen.png.") var out = "out/textgen"

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1. Given: \(batchSize)") }
        guard rank >= 1 else { throw ValidationError("--rank must be at least 1. Given: \(rank)") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1. Given: \(repeats)") }
    }

    func run() async throws {
        let (model, tokenizer, sources) = try loadModel()
        let longest = promptTokens.range.upperBound + maxTokens.range.upperBound
        guard longest <= model.config.maxPositionEmbeddings else {
            throw ValidationError("prompts and outputs up to \(longest) tokens exceed the model's context of \(model.config.maxPositionEmbeddings)")
        }
        let workload = TextgenWorkload(count: batchSize, promptTokens: promptTokens, outputTokens: maxTokens,
                                       vocabularySize: model.config.vocabularySize, seed: seed)
        let runner = TextgenRunner(model: model, tokenizer: tokenizer, workload: workload)
        let modelLabel = shape?.rawValue ?? modelOptions.model
        print("backend: \(model.backend.name); model: \(modelLabel) (\(fixed(Double(model.config.parameterCount) / 1e6, 1))M parameters); "
              + "\(batchSize) requests; prompts \(promptTokens) tokens, outputs \(maxTokens) tokens (greedy); seed \(seed)")

        // Request i of a popularity uses adapter assignment[i]; adapter k is source k mod sources.count, under a
        // name of its own.
        let workloads = popularity.map { popularity in
            let assignment = popularity.adapterIndices(requests: batchSize)
            return (popularity: popularity, adapterCount: Set(assignment).count, adapters: assignment.map { index in
                let source = sources[index % sources.count], copy = index / sources.count
                return (name: copy == 0 ? source.name : "\(source.name)-\(copy + 1)", directory: source.directory)
            })
        }
        let systems = ServingSystem.allCases
        // Repeats are the outer loop, so a burst of other work on the machine slows one run of many systems rather
        // than every run of one. runs[workload][system]: seconds of each repeat.
        let progress = ProgressBar(total: repeats * workloads.count * systems.count)
        var runs = [[[Double]]](repeating: [[Double]](repeating: [], count: systems.count), count: workloads.count)
        for repeatIndex in 1...repeats {
            for (index, workloadOfPopularity) in workloads.enumerated() {
                for (systemIndex, system) in systems.enumerated() {
                    progress.show(done: ((repeatIndex - 1) * workloads.count + index) * systems.count + systemIndex,
                                  label: "run \(repeatIndex) of \(repeats): \(workloadOfPopularity.popularity.rawValue), \(system.label)")
                    runs[index][systemIndex].append(try await runner.seconds(system, adapters: workloadOfPopularity.adapters))
                }
            }
        }
        progress.finish()
        let results = workloads.enumerated().flatMap { index, workloadOfPopularity in
            systems.enumerated().map { systemIndex, system in
                let seconds = median(runs[index][systemIndex])
                return TextgenReport.Result(popularity: workloadOfPopularity.popularity.rawValue, system: system.rawValue,
                                            adapters: workloadOfPopularity.adapterCount, requests: batchSize,
                                            generatedTokens: workload.generatedTokens, seconds: seconds,
                                            tokensPerSecond: Double(workload.generatedTokens) / seconds)
            }
        }

        let report = TextgenReport(
            date: Date.now.formatted(.iso8601), backend: model.backend.name, model: modelLabel,
            parameters: model.config.parameterCount, batchSize: batchSize, promptTokens: promptTokens.description,
            maxTokens: maxTokens.description, seed: seed, repeats: repeats, results: results)
        print(report.markdownTable)
        try report.write(to: out, title: "Text generation: \(modelLabel), \(batchSize) requests, \(modelOptions.device.device)")
        print("wrote \(out)/textgen.json, textgen.csv, textgen.png")
    }

    /// The model, its tokenizer and the adapter directories to serve: --model's, or a random model of --shape with one
    /// random adapter written to a temporary directory (the engine loads adapters from directories).
    private func loadModel() throws -> (LlamaModel, Tokenizer, [(name: String, directory: String)]) {
        let (split, tokenizer, adapters) = try modelOptions.load()
        let model = split.ranks[0]
        guard let shape else {
            guard !adapters.isEmpty else { throw ValidationError("--model \(modelOptions.model) has no adapters; give --adapter NAME=DIR") }
            return (model, tokenizer, adapters)
        }
        let random = LlamaModel.random(config: shape.config, backend: model.backend)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("punica-textgen-\(shape.rawValue)-r\(rank)").path
        try LoRAAdapter.writeRandom(to: directory, config: shape.config, rank: rank, alpha: Double(rank), targets: Projection.of(shape.config), seed: seed)
        return (random, tokenizer, [("random-r\(rank)", directory)])
    }
}

/// Serves the workload the way of one `ServingSystem` on fresh engines and times it.
struct TextgenRunner {
    let model: LlamaModel
    let tokenizer: Tokenizer
    let workload: TextgenWorkload

    /// Seconds to serve every request; `adapters[i]` is request i's adapter. Only serving is timed: engines are
    /// started, adapters loaded and merged models built before the clock starts.
    func seconds(_ system: ServingSystem, adapters: [(name: String, directory: String)]) async throws -> Double {
        let all = Array(workload.requests.indices)
        // Request indices of each adapter, in order of first use.
        var groups: [[Int]] = []
        for (index, adapter) in adapters.enumerated() {
            if let group = groups.firstIndex(where: { adapters[$0[0]].name == adapter.name }) {
                groups[group].append(index)
            } else {
                groups.append([index])
            }
        }
        let firsts = groups.map { adapters[$0[0]] }
        switch system {
        case .batched:
            return try await withEngine(model, adapters: firsts) { engine in
                try await timed(engine, workload.engineRequests(all) { adapters[$0].name })
            }
        case .perAdapter:
            return try await withEngine(model, adapters: firsts) { engine in
                var total = 0.0
                for group in groups { total += try await timed(engine, workload.engineRequests(group) { adapters[$0].name }) }
                return total
            }
        case .merged:
            var total = 0.0
            for (group, adapter) in zip(groups, firsts) {
                let weights = try LoRAAdapter(name: adapter.name, directory: adapter.directory, config: model.config, backend: model.backend)
                total += try await withEngine(model.merging(weights), adapters: []) { engine in
                    try await timed(engine, workload.engineRequests(group) { _ in nil })
                }
            }
            return total
        case .base:
            return try await withEngine(model, adapters: []) { engine in
                try await timed(engine, workload.engineRequests(all) { _ in nil })
            }
        }
    }

    /// An engine for `model` sized for the whole workload, with `adapters` registered and warmed up (a one-token
    /// request on each, which loads it), for the duration of `body`.
    private func withEngine(_ model: LlamaModel, adapters: [(name: String, directory: String)],
                            _ body: (Engine) async throws -> Double) async throws -> Double {
        var configuration = EngineConfiguration()
        configuration.maxRunningRequests = workload.requests.count
        configuration.kvCacheTokens = workload.requests.reduce(0) { total, request in
            let tokens = request.promptIDs.count + request.outputTokens
            return total + (tokens + configuration.pageSize - 1) / configuration.pageSize * configuration.pageSize
        }
        configuration.adapterSlots = max(adapters.count, 1)
        let engine = try Engine(model: model, tokenizer: tokenizer, configuration: configuration)
        for adapter in adapters { try await engine.registerAdapter(name: adapter.name, directory: adapter.directory) }
        let names = adapters.isEmpty ? [nil] : adapters.map { Optional($0.name) }
        let warmUp = names.enumerated().map { index, name in
            var sampling = SamplingParameters()
            sampling.maxTokens = 1
            return EngineRequest(id: "warm-up-\(index)", promptIDs: workload.requests[0].promptIDs, adapter: name, sampling: sampling)
        }
        _ = try await engine.complete(warmUp)
        let seconds = try await body(engine)
        await engine.drain()
        return seconds
    }

    /// Seconds to complete `requests`, checking that each generated its full length.
    private func timed(_ engine: Engine, _ requests: [EngineRequest]) async throws -> Double {
        let started = ContinuousClock.now
        let completions = try await engine.complete(requests)
        let seconds = started.duration(to: .now).seconds
        for (request, completion) in zip(requests, completions) where completion.tokenIDs.count != request.sampling.maxTokens {
            throw ValidationError("request \(request.id) generated \(completion.tokenIDs.count) of \(request.sampling.maxTokens) tokens "
                                  + "(\(completion.finishReason.rawValue)\(completion.message.map { ": \($0)" } ?? ""))")
        }
        return seconds
    }
}

/// What `punica bench textgen` measured, as JSON (snake_case keys), CSV, a markdown table and a chart.
struct TextgenReport: Encodable {
    struct Result: Encodable {
        let popularity: String
        let system: String
        let adapters: Int
        let requests: Int
        let generatedTokens: Int
        let seconds: Double
        let tokensPerSecond: Double
    }

    let date: String
    let backend: String
    let model: String
    let parameters: Int
    let batchSize: Int
    let promptTokens: String
    let maxTokens: String
    let seed: UInt64
    /// Timed runs per result; `seconds` is their median.
    let repeats: Int
    let results: [Result]

    private var popularities: [String] { results.map(\.popularity).reduce(into: []) { if !$0.contains($1) { $0.append($1) } } }

    private func result(_ popularity: String, _ system: ServingSystem) -> Result? {
        results.first { $0.popularity == popularity && $0.system == system.rawValue }
    }

    /// tokens/s: one row per popularity, one column per system.
    var markdownTable: String {
        var lines = ["| popularity | adapters | " + ServingSystem.allCases.map { "\($0.label) tok/s" }.joined(separator: " | ") + " |",
                     "|---|---|" + String(repeating: "---|", count: ServingSystem.allCases.count)]
        for popularity in popularities {
            let cells = ServingSystem.allCases.map { result(popularity, $0).map { fixed($0.tokensPerSecond, 1) } ?? "" }
            lines.append("| \(popularity) | \(result(popularity, .batched)?.adapters ?? 0) | " + cells.joined(separator: " | ") + " |")
        }
        return lines.joined(separator: "\n")
    }

    var csv: String {
        (["popularity,system,adapters,requests,generated_tokens,seconds,tokens_per_second"] + results.map {
            "\($0.popularity),\($0.system),\($0.adapters),\($0.requests),\($0.generatedTokens),\($0.seconds),\($0.tokensPerSecond)"
        }).joined(separator: "\n") + "\n"
    }

    /// Grouped bars as in Punica's figure: one group per popularity, one bar per system.
    func chart(title: String) -> BarChart {
        let groups = popularities
        return BarChart(title: title, unit: "tokens/s", groups: groups.map { $0.prefix(1).uppercased() + $0.dropFirst() },
                        series: ServingSystem.allCases.map { BarChart.Series(name: $0.label, color: $0.color) },
                        values: groups.map { group in ServingSystem.allCases.map { result(group, $0)?.tokensPerSecond ?? 0 } })
    }

    func write(to directory: String, title: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        try encoder.encode(self).write(to: URL(fileURLWithPath: directory + "/textgen.json"))
        try Data(csv.utf8).write(to: URL(fileURLWithPath: directory + "/textgen.csv"))
        try Data(chart(title: title).render().png()).write(to: URL(fileURLWithPath: directory + "/textgen.png"))
    }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct ProgressBar {
    let total: Int
    private let visible = isatty(STDERR_FILENO) == 1

    init(total: Int) { self.total = total }

    func show(done: Int, label: String) {
        guard visible else { return }
        let width = 30, filled = width * done / max(total, 1)
        fputs("\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] \(done)/\(total) \(label)\u{1B}[K", stderr)
    }

    func finish() {
        if visible { fputs("\r\u{1B}[K", stderr) }
    }
}
