import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute
import PunicaEngine
import PunicaModel
import PunicaTokenizer

/// `punica bench engine`: the serving engine's throughput and step time as concurrent requests and the distinct
/// adapters among them grow, with many more adapters registered than used.
struct BenchEngine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Engine throughput and step time for growing numbers of concurrent requests and distinct adapters.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var parallel: ParallelOptions
    @Option(parsing: .upToNextOption, help: "Concurrent requests.") var concurrency: [Int] = [1, 8, 32]
    @Option(parsing: .upToNextOption, help: "Distinct adapters among them (0: base model only).") var distinct: [Int] = [0, 1, 8, 32]
    @Option(help: "Adapters registered (random rank-r adapters on all seven projections; distinct ones drawn from them).")
    var registered = 1000
    @Option(help: "LoRA rank of the random adapters.") var rank = 16
    @Option(help: "Prompt tokens per request.") var promptTokens = 32
    @Option(help: "Tokens generated per request.") var maxTokens = 32
    @Option(help: "Where random adapters are written (reused across runs).") var cache = "/tmp/punica-bench-adapters"
    @Flag(help: "Run every step eagerly: no recorded decode steps (CUDA graphs).") var enforceEager = false
    @Flag(help: "One step at a time: no scheduling while the device runs the step before.") var noScheduleAhead = false

    func run() async throws {
        let (model, tokenizer, _) = try modelOptions.load(tensorParallelSize: parallel.tensorParallelSize)
        var configuration = EngineConfiguration()
        configuration.adapterSlots = max(1, distinct.max() ?? 1)
        configuration.maxRunningRequests = max(1, concurrency.max() ?? 1)
        configuration.recordDecodeSteps = !enforceEager
        configuration.scheduleAhead = !noScheduleAhead
        let engine = try Engine(model: model, tokenizer: tokenizer, configuration: configuration)
        print(engine.kvCacheSummary)
        // Every registered name is validated; they share a few directories, so writing them stays cheap.
        let directories = try (0..<max(1, distinct.max() ?? 1)).map { index in
            let directory = "\(cache)/\(modelOptions.model.split(separator: "/").last ?? "model")-r\(rank)-\(index)"
            if !FileManager.default.fileExists(atPath: directory + "/adapter_model.safetensors") {
                try LoRAAdapter.writeRandom(to: directory, config: model.config, rank: rank, alpha: Double(2 * rank),
                                            targets: Projection.of(model.config), seed: UInt64(index + 1))
            }
            return directory
        }
        let clock = ContinuousClock()
        let registration = try await clock.measure {
            for index in 0..<max(registered, directories.count) {
                try await engine.registerAdapter(name: "adapter\(index)", directory: directories[index % directories.count])
            }
        }
        print("backend: \(model.ranks[0].backend.name)\(model.ranks.count > 1 ? " × \(model.ranks.count) ranks" : ""); \(modelOptions.model) (\(model.config.parameterCount / 1_000_000)M parameters); "
              + "\(engine.adapterNames().count) adapters registered in \(fixed(registration.seconds, 2)) s; "
              + "prompt \(promptTokens), \(maxTokens) new tokens per request, rank \(rank); "
              + (noScheduleAhead ? "one step at a time" : "each step scheduled while the one before runs"))
        print("| concurrent | distinct adapters | tokens/s | mean step ms | steps | warm-up s (adapter loads) |")
        print("|---|---|---|---|---|---|")
        var random = SplitMix64(seed: 1)
        for requests in concurrency {
            for adapters in distinct where adapters <= requests {
                let batch = (0..<requests).map { index in
                    var sampling = SamplingParameters()
                    sampling.temperature = 0
                    sampling.ignoreEOS = true
                    sampling.maxTokens = maxTokens
                    let prompt = (0..<promptTokens).map { _ in Int.random(in: 3..<model.config.vocabularySize, using: &random) }
                    // Distinct adapters are far apart in the registry, as a real mix would be.
                    let adapter = adapters == 0 ? nil : "adapter\((index % adapters) * max(1, registered / adapters))"
                    return EngineRequest(id: "\(requests)-\(adapters)-\(index)", promptIDs: prompt, adapter: adapter, sampling: sampling)
                }
                // Untimed: one single-token request per adapter of the batch loads every adapter it needs (cold
                // loads are reported apart from the throughput).
                let warmUp = Dictionary(grouping: batch, by: { $0.adapter ?? "" }).values.map { requests in
                    var request = requests[0]
                    request.id += "-warm"
                    request.sampling.maxTokens = 1
                    return request
                }
                let loading = try await clock.measure { _ = try await engine.complete(warmUp) }
                let stepsBefore = engine.stats().steps
                var generated = 0
                let elapsed = try await clock.measure {
                    generated = try await engine.complete(batch).reduce(0) { $0 + $1.tokenIDs.count }
                }
                let steps = engine.stats().steps - stepsBefore
                print("| \(requests) | \(adapters) | \(fixed(Double(generated) / elapsed.seconds, 1)) | "
                      + "\(fixed(1000 * elapsed.seconds / Double(max(steps, 1)), 2)) | \(steps) | \(fixed(loading.seconds, 2)) |")
            }
        }
        await engine.drain()
    }
}
