import Dispatch
import Foundation
import PunicaCompute
import PunicaEngine
import PunicaModel
import PunicaTokenizer
import Testing
import TestSupport

/// A scripted model: the next token is the row's token + 1 (+ 100 × (slot + 1) for an adapter's rows), so every
/// output is predictable. A step takes `stepDelay` and, when `gateSteps` is set, waits for `allowSteps(_:)`; adapter
/// loads take `loadDelay`, or wait for `releaseLoads()` when `holdLoads` is set. The gates make tests independent of
/// how busy the machine is. With `runsAhead` its tokens come back as a GPU's do: not ready until read.
final class ScriptedRunner: ModelRunner, @unchecked Sendable {
    let vocabularySize = 605
    let maxPositions = 256
    let eosTokenIDs: [Int] = []
    let pageSize = 4
    let pageCount: Int
    let kvCacheDType = DType.bfloat16
    let adapterSlotCount = 2
    let loadDelay: Double
    let stepDelay: Double
    let holdLoads: Bool
    let gateSteps: Bool
    let runsAhead: Bool
    private let loadGate = DispatchSemaphore(value: 0)
    private let stepGate = DispatchSemaphore(value: 0)
    private(set) var steps: [StepBatch] = []
    /// The adapter of each slot, as the engine set them.
    private(set) var slotNames: [String?] = [nil, nil]

    init(pageCount: Int = 64, loadDelay: Double = 0, stepDelay: Double = 0.001, holdLoads: Bool = false, gateSteps: Bool = false,
         runsAhead: Bool = false) {
        self.pageCount = pageCount
        self.runsAhead = runsAhead
        self.loadDelay = loadDelay
        self.stepDelay = stepDelay
        self.holdLoads = holdLoads
        self.gateSteps = gateSteps
    }

    func releaseLoads() { loadGate.signal() }

    func allowSteps(_ count: Int) { for _ in 0..<count { stepGate.signal() } }

    func validateAdapter(directory: String) throws {
        if directory.hasSuffix("broken") { throw RequestError.invalid(field: "lora_path", reason: "is broken") }
    }

    /// Loads begun so far (each on a loader thread).
    var loadsStarted: Int {
        startedLock.lock()
        defer { startedLock.unlock() }
        return started
    }
    private var started = 0
    private let startedLock = NSLock()

    func loadAdapter(name: String, directory: String) throws -> HostAdapter {
        startedLock.lock()
        started += 1
        startedLock.unlock()
        if holdLoads { loadGate.wait() }
        Thread.sleep(forTimeInterval: loadDelay)
        return HostAdapter.empty(name: name, bytes: 64)
    }

    func setSlot(_ slot: Int, to adapter: HostAdapter?) { slotNames[slot] = adapter?.name }

    func run(_ batch: StepBatch, fed: FedTokens?, choices: [TokenChoice], returnLogits: [Bool]) -> StepOutput {
        var batch = batch
        if let fed {
            let ids = fed.source.ids
            for (row, index) in fed.rows { batch.tokens[row] = Int32(max(ids[index], 0)) }
        }
        if gateSteps { stepGate.wait() }
        Thread.sleep(forTimeInterval: stepDelay)
        steps.append(batch)
        let logits = batch.logitRows.map { row in
            var logits = [Float](repeating: 0, count: vocabularySize)
            let slot = batch.loraSegments.first { $0.rows.contains(row) }?.slot
            logits[(Int(batch.tokens[row]) + 1 + (slot.map { 100 * ($0 + 1) } ?? 0)) % vocabularySize] = 10
            return logits
        }
        let ids = zip(logits, choices).map { logits, choice in logits.withUnsafeBufferPointer { choice.pick($0) } }
        return StepOutput(tokens: runsAhead ? SampledTokens(device: nil, ready: { false }, wait: { ids }) : SampledTokens(ids),
                          logits: zip(logits, returnLogits).map { $1 ? $0 : nil })
    }
}

@Suite struct EngineTests {
    let tokenizer = try! Tokenizer(directory: Fixtures.path("tokenizers/bytelevel"))

    func greedy(_ id: String, _ prompt: [Int], adapter: String? = nil, maxTokens: Int = 4, stop: [String] = []) -> EngineRequest {
        var sampling = SamplingParameters()
        sampling.temperature = 0
        sampling.maxTokens = maxTokens
        sampling.stopStrings = stop
        return EngineRequest(id: id, promptIDs: prompt, adapter: adapter, sampling: sampling)
    }

    @Test func streamsEachTokenThenOneFinalEvent() async throws {
        let engine = Engine(runner: ScriptedRunner(), tokenizer: tokenizer)
        var events: [GenerationEvent] = []
        for await event in try engine.submit(greedy("a", [10, 20], maxTokens: 3)) { events.append(event) }
        let ids = events.compactMap { if case let .token(id, _, _, _) = $0 { id } else { nil } }
        #expect(ids == [21, 22, 23])
        #expect(events.last == .finished(reason: .length, usage: Usage(promptTokens: 2, completionTokens: 3), message: nil))
        let text = events.compactMap { if case let .token(_, text, _, _) = $0 { text } else { nil } }.joined()
        #expect(text == tokenizer.decode([21, 22, 23]))
        await engine.drain()
    }

    @Test func requestsOnDifferentAdaptersShareSteps() async throws {
        let runner = ScriptedRunner()
        let engine = Engine(runner: runner, tokenizer: tokenizer)
        try await engine.registerAdapter(name: "x", directory: "/x")
        // Loaded first, so the two requests meet in the batch however slowly the load thread runs.
        _ = try await engine.complete([greedy("warm", [1], adapter: "x", maxTokens: 1)])
        let results = try await engine.complete([greedy("base", [1], maxTokens: 30), greedy("x", [1], adapter: "x", maxTokens: 4)])
        #expect(results[0].tokenIDs == Array(2...31))
        #expect(results[1].tokenIDs == [102, 203, 304, 405])
        #expect(runner.steps.contains { $0.sequences.count == 2 && $0.loraSegments.count == 1 })
        #expect(engine.stats().kvPagesUsed == 0)
        await engine.drain()
    }

    /// The engine schedules each step while the one before runs (its tokens not read yet): the same tokens, texts
    /// and finish reasons as one step at a time, across adapters, length limits, stop strings, stop tokens and
    /// history penalties.
    @Test func schedulingAheadOfTheDeviceChangesNoOutput() async throws {
        func run(runsAhead: Bool) async throws -> ([Completion], rows: Int) {
            let runner = ScriptedRunner(runsAhead: runsAhead)
            let engine = Engine(runner: runner, tokenizer: tokenizer)
            try await engine.registerAdapter(name: "x", directory: "/x")
            _ = try await engine.complete([greedy("warm", [1], adapter: "x", maxTokens: 1)])
            let a = tokenizer.encode("a", addSpecialTokens: false)
            var stopToken = greedy("stop-token", [40], maxTokens: 20)
            stopToken.sampling.stopTokenIDs = [45]
            var penalized = greedy("penalized", [7, 8], adapter: "x", maxTokens: 6)
            penalized.sampling.repetitionPenalty = 1.5
            penalized.sampling.minTokens = 3
            let results = try await engine.complete([greedy("long", [1], maxTokens: 30), greedy("x", [3, 4, 5], adapter: "x", maxTokens: 7),
                                                     greedy("stop", a, maxTokens: 12, stop: ["de"]), stopToken, penalized,
                                                     greedy("one", [9], maxTokens: 1)])
            #expect(engine.stats().kvPagesUsed == 0)
            await engine.drain()
            return (results, runner.steps.reduce(0) { $0 + $1.rowCount })
        }
        let (inPlace, rowsInPlace) = try await run(runsAhead: false)
        let (ahead, rowsAhead) = try await run(runsAhead: true)
        #expect(ahead.map(\.tokenIDs) == inPlace.map(\.tokenIDs))
        #expect(ahead.map(\.text) == inPlace.map(\.text))
        #expect(ahead.map(\.finishReason) == inPlace.map(\.finishReason))
        #expect(inPlace[3].finishReason == .stop && inPlace[3].tokenIDs.last == 45 && inPlace[2].finishReason == .stop)
        // Scheduled ahead, each request that stopped on a token it could not foresee (the stop string, the stop
        // token) had a row in the step after, dropped; a length limit is foreseen and costs nothing.
        #expect(rowsAhead == rowsInPlace + 2)
    }

    @Test func stopStringsCutTheTextAndAreNeverStreamed() async throws {
        let engine = Engine(runner: ScriptedRunner(), tokenizer: tokenizer)
        // Byte-level ids run through the alphabet: from "a" the scripted model writes "bcdefg".
        let a = tokenizer.encode("a", addSpecialTokens: false)
        let full = try await engine.complete([greedy("full", a, maxTokens: 6)])[0].text
        #expect(full == "bcdefg")
        let stop = String(full.dropFirst(1).prefix(2))
        var streamed = ""
        var reason: FinishReason?
        for await event in try engine.submit(greedy("cut", a, maxTokens: 6, stop: [stop])) {
            switch event {
            case let .token(_, text, _, _): streamed += text
            case .prompt: break
            case let .finished(finish, _, _): reason = finish
            }
        }
        #expect(reason == .stop && !streamed.contains(stop) && full.hasPrefix(streamed + stop))
        await engine.drain()
    }

    @Test func cancellingFreesPagesAndEndsTheStream() async throws {
        let runner = ScriptedRunner(gateSteps: true)
        let engine = Engine(runner: runner, tokenizer: tokenizer)
        let stream = try engine.submit(greedy("long", [5], maxTokens: 200))
        runner.allowSteps(2)
        var tokens = 0
        var final: GenerationEvent?
        for await event in stream {
            if case .token = event {
                tokens += 1
                if tokens == 2 {
                    engine.cancel(id: "long")
                    // The loop may finish the step it is in; the one after sees the cancellation.
                    runner.allowSteps(2)
                }
            } else {
                final = event
            }
        }
        guard case let .finished(reason, usage, _)? = final else { Issue.record("no final event"); return }
        #expect(reason == .cancelled && usage.completionTokens <= 4)
        #expect(engine.stats().kvPagesUsed == 0 && engine.stats().running == 0)
        await engine.drain()
    }

    /// The tokens of each of `requests`, submitted while the runner holds its steps, so they meet in the first ones.
    func gatedTokens(_ runner: ScriptedRunner, _ engine: Engine, _ requests: [EngineRequest]) async throws -> [[Int]] {
        let streams = try requests.map { try engine.submit($0) }
        runner.allowSteps(1000)
        var tokens: [[Int]] = []
        for stream in streams {
            var ids: [Int] = []
            for await case let .token(id, _, _, _) in stream { ids.append(id) }
            tokens.append(ids)
        }
        return tokens
    }

    /// Four choices of a 10-token prompt in one group (pages of 4): the first computes the prompt, the others take
    /// its two full pages and compute only its last two tokens, and each generates what it generates alone.
    @Test func aPromptGroupComputesItsSharedPagesOnce() async throws {
        let runner = ScriptedRunner(gateSteps: true)
        let engine = Engine(runner: runner, tokenizer: tokenizer)
        let requests = (0..<4).map { choice in
            var request = greedy("c\(choice)", Array(1...10), maxTokens: 3)
            request.promptGroup = "g"
            return request
        }
        #expect(try await gatedTokens(runner, engine, requests) == Array(repeating: [11, 12, 13], count: 4))
        // 10 prompt rows, 2 for each other choice, and two decoding rows for each choice: 24 (48 apart).
        let rows = runner.steps.reduce(0) { $0 + $1.rowCount }
        #expect(rows == 24)
        #expect(engine.stats().sharedPromptTokens == 24 && engine.stats().kvPagesUsed == 0)
        await engine.drain()
    }

    /// Prompt logprobs take every prompt position's logits: a group asking for them computes each prompt in full.
    @Test func aGroupScoringItsPromptSharesNothing() async throws {
        let runner = ScriptedRunner(gateSteps: true)
        let engine = Engine(runner: runner, tokenizer: tokenizer)
        let requests = (0..<2).map { choice in
            var request = greedy("c\(choice)", Array(1...10), maxTokens: 1)
            request.promptGroup = "g"
            request.sampling.promptLogprobs = 0
            return request
        }
        #expect(try await gatedTokens(runner, engine, requests) == [[11], [11]])
        let rows = runner.steps.reduce(0) { $0 + $1.rowCount }
        #expect(engine.stats().sharedPromptTokens == 0 && rows == 20)
        await engine.drain()
    }

    @Test func aConsumerThatStopsListeningCancelsItsRequest() async throws {
        let engine = Engine(runner: ScriptedRunner(), tokenizer: tokenizer)
        let task = Task {
            for await _ in try engine.submit(greedy("gone", [5], maxTokens: 200)) {}
        }
        try await Task.sleep(for: .milliseconds(5))
        task.cancel()
        for _ in 0..<1000 where engine.stats().running > 0 || engine.stats().kvPagesUsed > 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(engine.stats().running == 0 && engine.stats().kvPagesUsed == 0)
        await engine.drain()
    }

    @Test func refusalsNameTheProblem() async throws {
        var configuration = EngineConfiguration()
        configuration.maxWaitingRequests = 1
        configuration.maxRunningRequests = 1
        let engine = Engine(runner: ScriptedRunner(loadDelay: 0.2), tokenizer: tokenizer, configuration: configuration)
        #expect(throws: RequestError.unknownAdapter("nope", known: [])) { try engine.submit(greedy("u", [1], adapter: "nope")) }
        #expect(throws: RequestError.self) { try engine.submit(greedy("v", [9999])) }
        #expect(throws: RequestError.self) { try engine.submit(greedy("e", [])) }
        await #expect(throws: RequestError.self) { try await engine.registerAdapter(name: "b", directory: "/broken") }
        try await engine.registerAdapter(name: "slow", directory: "/slow")
        let first = try engine.submit(greedy("1", [1], adapter: "slow", maxTokens: 50))
        _ = try engine.submit(greedy("2", [1], maxTokens: 50))
        #expect(throws: RequestError.queueFull(limit: 1)) { try engine.submit(greedy("3", [1])) }
        await #expect(throws: RequestError.adapterInUse("slow", requests: 1)) { try await engine.unregisterAdapter(name: "slow") }
        engine.cancel(id: "1")
        for await _ in first {}
        try await engine.unregisterAdapter(name: "slow")
        #expect(engine.adapterNames().isEmpty)
        engine.cancel(id: "2")
        await engine.drain()
        #expect(throws: RequestError.shuttingDown) { try engine.submit(greedy("late", [1])) }
    }

    /// The snapshot routers read: which adapters the running and waiting requests use, and where each adapter is.
    @Test func statsShowAdaptersOfRunningAndWaitingRequestsAndTheirResidency() async throws {
        let runner = ScriptedRunner(holdLoads: true, gateSteps: true)
        let engine = Engine(runner: runner, tokenizer: tokenizer)
        for name in ["a", "b"] { try await engine.registerAdapter(name: name, directory: "/" + name) }
        func eventually(_ what: String, _ condition: (EngineStats) -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while !condition(engine.stats()) {
                try #require(ContinuousClock.now < deadline, "\(what): \(engine.stats())")
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        #expect(engine.stats().pageSize == 4 && engine.stats().kvCacheDType == .bfloat16 && engine.stats().adapterSlots == 2)
        let stream = try engine.submit(greedy("1", [1], adapter: "a", maxTokens: 2))
        try await eventually("a waits for its load") {
            $0.waitingAdapters == ["a"] && $0.runningAdapters.isEmpty && $0.adapterStates == ["a": .loading]
        }
        runner.releaseLoads()
        runner.allowSteps(1)
        try await eventually("a runs from a slot") { $0.runningAdapters == ["a"] && $0.waitingAdapters.isEmpty && $0.adapterStates == ["a": .resident(slot: 0)] }
        runner.allowSteps(1)
        for await _ in stream {}
        let after = engine.stats()
        #expect(after.runningAdapters.isEmpty && after.waitingAdapters.isEmpty && after.adapterStates == ["a": .resident(slot: 0)])
        try await engine.unregisterAdapter(name: "a")
        try await eventually("an unregistered adapter is gone") { $0.adapterStates.isEmpty }
        await engine.drain()
    }

    /// An adapter whose load is still going on does not hold up the base-model request submitted beside it.
    @Test func loadingAnAdapterDoesNotStallTheBatch() async throws {
        let runner = ScriptedRunner(holdLoads: true)
        let engine = Engine(runner: runner, tokenizer: tokenizer)
        try await engine.registerAdapter(name: "slow", directory: "/slow")
        let adapted = try engine.submit(greedy("slow", [1], adapter: "slow", maxTokens: 2))
        let base = try await engine.complete([greedy("base", [1], maxTokens: 20)])
        #expect(base[0].tokenIDs.count == 20 && engine.stats().requestsPerAdapter["slow"] == 1)
        runner.releaseLoads()
        var adaptedTokens: [Int] = []
        for await event in adapted { if case let .token(id, _, _, _) = event { adaptedTokens.append(id) } }
        #expect(adaptedTokens == [102, 203])
        await engine.drain()
    }

    /// With the batch full, the adapters of three waiting requests all start loading before their turn, at once;
    /// each request then runs on its own adapter, and a slot freed by one goes to the next.
    @Test func adaptersOfWaitingRequestsLoadTogetherBeforeTheirTurn() async throws {
        let runner = ScriptedRunner(holdLoads: true)
        var configuration = EngineConfiguration()
        configuration.maxRunningRequests = 1
        let engine = Engine(runner: runner, tokenizer: tokenizer, configuration: configuration)
        for name in ["a", "b", "c"] { try await engine.registerAdapter(name: name, directory: "/\(name)") }
        let base = try engine.submit(greedy("base", [1], maxTokens: 40))
        let adapted = try ["a", "b", "c"].map { try engine.submit(greedy($0, [1], adapter: $0, maxTokens: 2)) }
        let deadline = ContinuousClock.now + .seconds(10)
        while runner.loadsStarted < 3 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(runner.loadsStarted == 3, "all three loads in flight together")
        for _ in 0..<3 { runner.releaseLoads() }
        for await _ in base {}
        for stream in adapted {
            var tokens: [Int] = []
            for await event in stream { if case let .token(id, _, _, _) = event { tokens.append(id) } }
            #expect(tokens.count == 2 && [100, 200].contains(tokens[0] - 2), "\(tokens)")
        }
        #expect(runner.slotNames.compactMap { $0 }.count == 2 && engine.stats().adapterStates.count == 3)
        await engine.drain()
    }

    /// A thousand registered adapters, twenty of them in use at once through two slots: each request still gets its
    /// own adapter's tokens, and every slot and page comes back.
    @Test func aThousandRegisteredAdaptersThroughTwoSlots() async throws {
        let engine = Engine(runner: ScriptedRunner(stepDelay: 0), tokenizer: tokenizer)
        for index in 0..<1000 { try await engine.registerAdapter(name: "adapter\(index)", directory: "/adapters/\(index)") }
        #expect(engine.adapterNames().count == 1000)
        let requests = (0..<20).map { greedy("r\($0)", [1], adapter: "adapter\($0 * 50)", maxTokens: 3) }
        let results = try await engine.complete(requests)
        // Whatever slot an adapter landed in, its rows got that slot's offset consistently: 1 → 1 + 1 + 100·(slot + 1) …
        for result in results {
            let offsets = zip([1] + result.tokenIDs, result.tokenIDs).map { ($1 - $0 - 1 + 605) % 605 }
            #expect(Set(offsets).count == 1 && [100, 200].contains(offsets[0]), "\(result.id): \(result.tokenIDs)")
        }
        #expect(engine.stats().kvPagesUsed == 0)
        await engine.drain()
    }
}
