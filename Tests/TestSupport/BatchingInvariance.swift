import Foundation
import PunicaCompute
import PunicaEngine
import PunicaModel
import PunicaTokenizer
import Testing

/// The real model through the engine, on any backend: whatever else shares the batch, a greedy request produces the
/// tokens it produces alone.
public enum BatchingInvariance {
    /// 64 random requests over 8 adapters (ranks 2–16, different targets) plus the base model, with random
    /// cancellations, through an engine with only 3 adapter slots (adapters load and get evicted while others run)
    /// and a KV cache too small for all of them (requests get preempted and recomputed). On a GPU the engine
    /// schedules each step while the one before runs.
    public static func sixtyFourRequestsOverEightAdaptersMatchTheirSoloRuns(on backend: Backend) async throws {
        let directory = Fixtures.path("models/llama-gqa")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("punica-adapters-\(UUID().uuidString)").path
        var adapters = ["alpha", "beta", "gamma"].map { ($0, "\(directory)/adapters/\($0)") }
        let targetSets: [[Projection]] = [[.q, .v], [.gate, .up, .down], [.q, .k, .v, .o, .gate, .up, .down], [.o], [.k, .down]]
        for (index, targets) in targetSets.enumerated() {
            let path = "\(scratch)/random\(index)"
            try LoRAAdapter.writeRandom(to: path, config: ModelConfig.load(directory: directory), rank: [2, 4, 8, 16, 3][index],
                                        alpha: 16, targets: targets, seed: UInt64(index + 1))
            adapters.append(("random\(index)", path))
        }
        let model = try LlamaModel(directory: directory, backend: backend)
        let tokenizer = try Tokenizer(directory: directory)
        // Alone, each request runs one step at a time, so scheduling ahead (a GPU's) is checked against it too.
        func engine(kvCacheTokens: Int, scheduleAhead: Bool) async throws -> Engine {
            var configuration = EngineConfiguration()
            configuration.scheduleAhead = scheduleAhead
            configuration.pageSize = 4
            configuration.kvCacheTokens = kvCacheTokens
            configuration.adapterSlots = 3
            configuration.maxTokensPerStep = 64
            let engine = try Engine(model: model, tokenizer: tokenizer, configuration: configuration)
            for (name, path) in adapters { try await engine.registerAdapter(name: name, directory: path) }
            return engine
        }

        var random = SplitMix64(seed: 42)
        let requests = (0..<64).map { index in
            var sampling = SamplingParameters()
            sampling.temperature = 0
            sampling.ignoreEOS = true
            sampling.maxTokens = Int.random(in: 1...12, using: &random)
            let prompt = (0..<Int.random(in: 1...20, using: &random)).map { _ in Int.random(in: 3..<600, using: &random) }
            let adapter = Int.random(in: 0...adapters.count, using: &random)
            return EngineRequest(id: "r\(index)", promptIDs: prompt, adapter: adapter < adapters.count ? adapters[adapter].0 : nil,
                                 sampling: sampling)
        }
        let cancelled = Set((0..<10).map { _ in "r\(Int.random(in: 0..<64, using: &random))" })

        let shared = try await engine(kvCacheTokens: 200, scheduleAhead: true)
        let streams = try requests.map { try shared.submit($0) }
        for id in cancelled { shared.cancel(id: id) }
        var batched: [String: (tokens: [Int], reason: FinishReason)] = [:]
        for (request, stream) in zip(requests, streams) {
            var tokens: [Int] = []
            for await event in stream {
                switch event {
                case let .token(id, _, _, _): tokens.append(id)
                case .prompt: break
                case let .finished(reason, _, _): batched[request.id] = (tokens, reason)
                }
            }
        }
        #expect(shared.stats().kvPagesUsed == 0 && shared.stats().running == 0 && shared.stats().waiting == 0)
        await shared.drain()

        let solo = try await engine(kvCacheTokens: 64, scheduleAhead: false)
        for request in requests where batched[request.id]?.reason != .cancelled {
            let alone = try await solo.complete([request])[0]
            #expect(batched[request.id]?.tokens == alone.tokenIDs, "\(request.id) on \(request.adapter ?? "the base model")")
            #expect(batched[request.id]?.reason == .length)
        }
        #expect(batched.values.filter { $0.reason == .cancelled }.count <= cancelled.count)
        await solo.drain()
        try? FileManager.default.removeItem(atPath: scratch)
    }
}
