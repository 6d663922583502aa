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

extension BatchingInvariance {
    /// A prompt's choices sharing its prefill (`EngineRequest.promptGroup`) generate exactly what they generate as
    /// independent requests, greedy and seeded, on the base model and an adapter, tokens and logprobs, while the
    /// prompt's full pages below its last token are computed once. Logprobs agree within `logprobTolerance` (steps of
    /// other row counts sum in other orders); top tokens in the same order where `exactTopOrder`, up to near-ties within
    /// `logprobTolerance` (in reduced precision runners-up may swap further, so only the tokens both list are compared).
    public static func promptGroupsMatchIndependentRequests(on backend: Backend, logprobTolerance: Float = 1e-4,
                                                            exactTopOrder: Bool = true) async throws {
        let directory = Fixtures.path("models/llama-gqa")
        let model = try LlamaModel(directory: directory, backend: backend)
        let runner = GatedRunner(LlamaRunner(model: model, pageSize: 4, pageCount: 129, adapterSlots: 2))
        let engine = Engine(runner: runner, tokenizer: try Tokenizer(directory: directory))
        try await engine.registerAdapter(name: "alpha", directory: "\(directory)/adapters/alpha")
        func choices(group: Bool) -> [EngineRequest] {
            // 21 and 23 tokens: 20 in full pages below the last.
            let prompts: [(length: Int, adapter: String?, temperature: Float)] = [(21, nil, 0), (23, "alpha", 1)]
            return prompts.enumerated().flatMap { prompt, spec in
                let ids = (0..<spec.length).map { (position: Int) -> Int in 3 + (position * 37 + prompt * 11) % 590 }
                return (0..<4).map { (choice: Int) -> EngineRequest in
                    var sampling = SamplingParameters()
                    sampling.temperature = spec.temperature
                    sampling.seed = UInt64(5 + choice)
                    sampling.maxTokens = 8
                    sampling.ignoreEOS = true
                    sampling.logprobs = 3
                    return EngineRequest(id: "\(group)-\(prompt)-\(choice)", promptIDs: ids, adapter: spec.adapter, sampling: sampling,
                                         promptGroup: group ? "p\(prompt)" : nil)
                }
            }
        }
        /// Each request's events, all submitted before the runner is opened.
        func events(_ requests: [EngineRequest]) async throws -> [[GenerationEvent]] {
            let streams = try requests.map { try engine.submit($0) }
            runner.open()
            var events: [[GenerationEvent]] = []
            for stream in streams { events.append(await stream.reduce(into: []) { $0.append($1) }) }
            return events
        }
        var warm = choices(group: false)[4]
        warm.sampling.maxTokens = 1
        _ = try await events([warm])  // the adapter loaded, so each group's choices meet in the first steps
        let before = runner.rows
        runner.hold()
        let grouped = try await events(choices(group: true))
        let groupedRows = runner.rows - before
        let independent = try await events(choices(group: false))
        let independentRows = runner.rows - before - groupedRows
        // The same tokens, texts and usage; logprobs to rounding.
        typealias Token = (id: Int, text: String, logprob: TokenLogprob?, top: [TokenLogprob])
        func tokens(_ events: [GenerationEvent]) -> [Token] {
            events.compactMap { if case let .token(id, text, logprob, top) = $0 { (id, text, logprob, top) } else { nil } }
        }
        for (apart, together) in zip(independent, grouped) {
            let (a, b) = (tokens(apart), tokens(together))
            #expect(a.map(\.id) == b.map(\.id) && a.map(\.text) == b.map(\.text) && apart.last == together.last)
            for (x, y) in zip(a, b) {
                if exactTopOrder {
                    let swapped = topOrderMismatch(x.top, y.top, tolerance: logprobTolerance)
                    #expect(swapped == nil, "top tokens \(swapped ?? "")")
                }
                let common = x.top.filter { entry in y.top.contains { $0.id == entry.id } }
                let mismatch = closeMismatch([x.logprob!.logprob] + common.map { entry in y.top.first { $0.id == entry.id }!.logprob },
                                             [y.logprob!.logprob] + common.map(\.logprob), atol: logprobTolerance)
                #expect(common.count >= x.top.count - 1 && mismatch == nil, "logprobs: \(mismatch ?? "\(x.top) vs \(y.top)")")
            }
        }
        let ids = grouped.map { tokens($0).map(\.id) }
        #expect(ids.allSatisfy { $0.count == 8 } && Set(ids[4...]).count > 1, "seeded choices differ")
        #expect(engine.stats().sharedPromptTokens == 2 * 3 * 20)
        #expect(independentRows - groupedRows == 2 * 3 * 20, "the shared tokens are computed once")
        #expect(engine.stats().kvPagesUsed == 0)
        await engine.drain()
    }
}

/// A runner whose steps wait from `hold()` until `open()`, and which counts the token rows it computes.
final class GatedRunner: ModelRunner, @unchecked Sendable {
    private let runner: ModelRunner
    private let gate = NSCondition()
    private var held = false
    /// Token rows of the steps run so far (read between steps).
    private(set) var rows = 0

    init(_ runner: ModelRunner) { self.runner = runner }

    func hold() { gate.withLock { held = true } }

    func open() {
        gate.withLock { held = false }
        gate.broadcast()
    }

    var vocabularySize: Int { runner.vocabularySize }
    var maxPositions: Int { runner.maxPositions }
    var eosTokenIDs: [Int] { runner.eosTokenIDs }
    var pageSize: Int { runner.pageSize }
    var pageCount: Int { runner.pageCount }
    var kvCacheDType: DType { runner.kvCacheDType }
    var adapterSlotCount: Int { runner.adapterSlotCount }
    func validateAdapter(directory: String) throws { try runner.validateAdapter(directory: directory) }
    func loadAdapter(name: String, directory: String) throws -> HostAdapter { try runner.loadAdapter(name: name, directory: directory) }
    func setSlot(_ slot: Int, to adapter: HostAdapter?) { runner.setSlot(slot, to: adapter) }

    func run(_ batch: StepBatch, fed: FedTokens?, choices: [TokenChoice], returnLogits: [Bool]) -> StepOutput {
        gate.withLock { while held { gate.wait() } }
        rows += batch.rowCount
        return runner.run(batch, fed: fed, choices: choices, returnLogits: returnLogits)
    }
}
