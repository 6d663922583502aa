#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import PunicaCompute
import PunicaModel
import PunicaTokenizer

/// Limits and sizes of the serving engine.
public struct EngineConfiguration: Sendable {
    /// Token slots per KV page.
    public var pageSize = 16
    /// The KV cache's size in tokens; nil sizes it from device memory (`gpuMemoryUtilization`), or takes
    /// `hostKVCacheTokens` on a backend whose tensors live in host memory.
    public var kvCacheTokens: Int?
    /// The share of the device's memory the engine may use in all: weights, steps, adapters and the KV cache (vLLM's
    /// `gpu_memory_utilization`).
    public var gpuMemoryUtilization = 0.9
    public static let hostKVCacheTokens = 32768
    /// The LoRA rank that sizing reserves device memory for, for each of `adapterSlots` (vLLM's `max_lora_rank`);
    /// adapters of higher rank still load, into memory the KV cache leaves.
    public var maxLoRARank = 16
    /// Decode steps recorded at start-up and replayed (CUDA graphs) where the backend can; off: every step eager
    /// (vLLM's `--enforce-eager`).
    public var recordDecodeSteps = true
    /// Schedule each step while the device runs the one before (vLLM's async scheduling); off: one step at a time,
    /// to measure what overlapping gains.
    public var scheduleAhead = true
    /// Requests in the batch at once, and tokens one step computes (chunked prefill budget).
    public var maxRunningRequests = 64
    public var maxTokensPerStep = 512
    /// Requests queued beyond those running before `submit` refuses with `queueFull`.
    public var maxWaitingRequests = 1024
    /// Adapters a step can use at once (the backend's LoRA tables), each with its weights on the device.
    public var adapterSlots = 16
    /// Host memory for adapters already read and converted (the host tier), so bringing one back to a slot is one
    /// copy; the least recently used go first. Adapters waiting for a slot may exceed it by what is loading.
    public var adapterHostCacheBytes = 4 << 30
    /// Adapter loads (read, convert) running at once, on their own threads.
    public var adapterLoaders = 4

    public init() {}
}

/// The serving engine: accepts requests at any time, batches every running request into one step whatever its
/// adapter, and streams each request's tokens back.
///
/// One thread owns all mutable engine state and runs the step loop: take in what arrived (submissions,
/// cancellations, loaded adapters), carry out what adapter residency (the pure `AdapterResidency`) plans, schedule
/// (the pure `Scheduler`), run the model, sample, stream. Callers touch only the inbox, the adapter registry and the
/// stats snapshot, each behind a lock. Adapters load on loader threads, several at once and before their requests'
/// turn, so a load never stalls the running batch.
public final class Engine: GenerationService, @unchecked Sendable {
    public let tokenizer: Tokenizer
    public let maxContextLength: Int
    private let configuration: EngineConfiguration
    private let runner: ModelRunner
    private let eos: Set<Int>
    private let wake = DispatchSemaphore(value: 0)
    private let loaders = DispatchQueue(label: "punica.adapter-loaders", attributes: .concurrent)

    // Shared with callers, each behind its lock.
    private let inbox = Locked<[Command]>([])
    private let registry = Locked<[String: String]>([:])  // adapter name → directory
    private let snapshot: Locked<EngineStats>
    private let admission = Locked(Admission())

    // Owned by the step loop.
    private var scheduler: Scheduler
    private var requests: [Int: LiveRequest] = [:]
    private var handleOfID: [String: Int] = [:]
    private var nextHandle = 0
    private var residency: AdapterResidency
    /// The host tier: host copies of adapters, as `residency` has them.
    private var hostAdapters: [String: HostAdapter] = [:]
    /// The residency version and states the stats snapshot last took.
    private var publishedResidency: (version: Int, states: [String: AdapterResidency.State]) = (-1, [:])
    private var drainWaiters: [CheckedContinuation<Void, Never>] = []
    private var throughput = ThroughputWindow()

    private enum Command {
        case submit(LiveRequest)
        case cancel(String)
        case adapterRegistered(String)
        case adapterLoaded(String, ticket: Int, Result<HostAdapter, Error>)
        case unregister(String, CheckedContinuation<Void, Error>)
        case drain(CheckedContinuation<Void, Never>)
    }

    private struct Admission {
        var queued = 0
        var draining = false
    }

    /// The real model with its KV cache on the model's backend: `configuration.kvCacheTokens`, or what device memory
    /// leaves (`kvCacheSummary` says which). Throws when the device has no room for even one page.
    public convenience init(model: LlamaModel, tokenizer: Tokenizer, configuration: EngineConfiguration = EngineConfiguration())
        throws(KVCacheSizingError) {
        try self.init(model: TensorParallelModel(ranks: [model]), tokenizer: tokenizer, configuration: configuration)
    }

    /// A model split over several devices (`TensorParallelModel`), or one: each rank's KV cache is sized as one device's
    /// (rank 0's memory; every rank holds the same share of weights and KV heads).
    public convenience init(model split: TensorParallelModel, tokenizer: Tokenizer, configuration: EngineConfiguration = EngineConfiguration())
        throws(KVCacheSizingError) {
        let model = split.ranks[0]
        let tokens: Int, summary: String
        if let fixed = configuration.kvCacheTokens {
            (tokens, summary) = (fixed, "KV cache: \(fixed) tokens (--kv-cache-tokens)")
        } else if let memory = model.backend.deviceMemory() {
            // Steps at their largest (a full prefill budget, every running request sampling, every row returning logits
            // for prompt logprobs) and every adapter slot.
            let rows = configuration.maxTokensPerStep + configuration.maxRunningRequests
            let reserved = model.stepBytes(rows: rows, logitRows: rows, loraRank: 3 * configuration.maxLoRARank)
                + configuration.adapterSlots * model.adapterBytes(rank: configuration.maxLoRARank)
                + (configuration.recordDecodeSteps ? RecordedDecodeSteps.reservedBytes(model: model) : 0)
            // Never more than every running request at the model's longest context can use.
            let usable = configuration.maxRunningRequests * model.config.maxPositionEmbeddings
            let sizing = try KVCacheSizing(freeBytes: memory.free, totalBytes: memory.total, utilization: configuration.gpuMemoryUtilization,
                                           reservedBytes: reserved, bytesPerToken: model.kvBytesPerToken, pageSize: configuration.pageSize,
                                           maxTokens: usable)
            (tokens, summary) = (sizing.tokens, sizing.summary)
        } else {
            let hostTokens = EngineConfiguration.hostKVCacheTokens
            (tokens, summary) = (hostTokens, "KV cache: \(hostTokens) tokens = \(gib(hostTokens * model.kvBytesPerToken)) in host memory")
        }
        let runner = LlamaRunner(model: split, pageSize: configuration.pageSize,
                                 pageCount: 1 + (tokens + configuration.pageSize - 1) / configuration.pageSize,
                                 adapterSlots: configuration.adapterSlots, recordDecodeSteps: configuration.recordDecodeSteps,
                                 maxLoRARank: configuration.maxLoRARank, maxBatch: configuration.maxRunningRequests)
        self.init(runner: runner, tokenizer: tokenizer, configuration: configuration)
        kvCacheSummary = summary + ", keys and values in \(model.backend.kvCacheDType); at most \(configuration.maxRunningRequests) running requests, contexts up to \(maxContextLength) tokens"
            + (runner.recordingSummary.isEmpty ? "" : "; " + runner.recordingSummary)
    }

    /// What the KV cache was sized to and why, for start-up logs.
    public private(set) var kvCacheSummary = ""

    public init(runner: ModelRunner, tokenizer: Tokenizer, configuration: EngineConfiguration = EngineConfiguration()) {
        self.runner = runner
        self.tokenizer = tokenizer
        self.configuration = configuration
        // A request's context is bounded by the model and by what the whole cache can hold.
        maxContextLength = min(runner.maxPositions, (runner.pageCount - 1) * runner.pageSize)
        eos = Set(tokenizer.eosTokenIDs + runner.eosTokenIDs)
        scheduler = Scheduler(configuration: .init(maxRunning: configuration.maxRunningRequests, maxTokensPerStep: configuration.maxTokensPerStep),
                              pageSize: runner.pageSize, pageCount: runner.pageCount)
        residency = AdapterResidency(slots: runner.adapterSlotCount, hostBudget: configuration.adapterHostCacheBytes,
                                     maxLoads: configuration.adapterLoaders)
        snapshot = Locked(EngineStats(running: 0, waiting: 0, kvPagesUsed: 0, kvPagesTotal: runner.pageCount - 1, pageSize: runner.pageSize,
                                      kvCacheDType: runner.kvCacheDType, adapterSlots: runner.adapterSlotCount, requestsPerAdapter: [:],
                                      generatedTokensPerSecond: 0, steps: 0, lastStepSequences: 0, lastStepTokens: 0))
        Thread.detach { [self] in stepLoop() }
    }

    // MARK: GenerationService

    public func adapterNames() -> [String] { registry.read { $0.keys.sorted() } }

    public func submit(_ request: EngineRequest) throws(RequestError) -> AsyncStream<GenerationEvent> {
        try validate(request)
        try admission.update { (state: inout Admission) throws(RequestError) in
            if state.draining { throw .shuttingDown }
            if state.queued >= configuration.maxWaitingRequests + configuration.maxRunningRequests {
                throw .queueFull(limit: configuration.maxWaitingRequests)
            }
            state.queued += 1
        }
        let (stream, continuation) = AsyncStream.makeStream(of: GenerationEvent.self)
        let live = LiveRequest(request, continuation: continuation, tokenizer: tokenizer, eos: eos)
        // A consumer that stops listening (a client gone away) cancels its request.
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.cancel(id: request.id) }
        }
        post(.submit(live))
        return stream
    }

    public func cancel(id: String) { post(.cancel(id)) }

    public func registerAdapter(name: String, directory: String) async throws {
        guard !name.isEmpty else { throw RequestError.invalid(field: "lora_name", reason: "must not be empty") }
        try runner.validateAdapter(directory: directory)
        try registry.update { (adapters: inout [String: String]) throws(RequestError) in
            if let existing = adapters[name], existing != directory {
                throw .invalid(field: "lora_name", reason: "\"\(name)\" is already registered from \(existing)")
            }
            adapters[name] = directory
        }
        post(.adapterRegistered(name))
    }

    public func unregisterAdapter(name: String) async throws {
        guard registry.read({ $0[name] != nil }) else { throw RequestError.unknownAdapter(name, known: adapterNames()) }
        try await withCheckedThrowingContinuation { post(.unregister(name, $0)) }
    }

    public func stats() -> EngineStats { snapshot.read { $0 } }

    public func drain() async {
        admission.update { $0.draining = true }
        await withCheckedContinuation { post(.drain($0)) }
    }

    // MARK: Validation (callers' threads)

    private func validate(_ request: EngineRequest) throws(RequestError) {
        try request.sampling.validate()
        let prompt = request.promptIDs
        if prompt.isEmpty { throw .invalid(field: "prompt", reason: "must contain at least one token") }
        if let bad = prompt.first(where: { !(0..<runner.vocabularySize).contains($0) }) {
            throw .invalid(field: "prompt", reason: "token ids must be in 0..<\(runner.vocabularySize). Given: \(bad)")
        }
        for (field, ids) in [("logit_bias", Array(request.sampling.logitBias.keys)), ("stop_token_ids", request.sampling.stopTokenIDs)] {
            if let bad = ids.first(where: { !(0..<runner.vocabularySize).contains($0) }) {
                throw .invalid(field: field, reason: "token ids must be in 0..<\(runner.vocabularySize). Given: \(bad)")
            }
        }
        if prompt.count >= maxContextLength {
            throw .invalid(field: "prompt", reason: "has \(prompt.count) tokens; the context holds at most \(maxContextLength) (prompt plus output)")
        }
        if let adapter = request.adapter, registry.read({ $0[adapter] == nil }) {
            throw .unknownAdapter(adapter, known: adapterNames())
        }
    }

    private func post(_ command: Command) {
        inbox.update { $0.append(command) }
        wake.signal()
    }

    // MARK: The step loop (its own thread)

    /// A step the runner has queued, with what taking in its tokens needs.
    private struct LaunchedStep {
        let output: StepOutput
        /// The requests that sample, in logit-row order.
        let sampled: [Int]
        /// Prompt positions whose logits follow the sampled rows': (handle, position).
        let scored: [(handle: Int, position: Int)]
        let sequences: Int, tokens: Int
    }

    /// A step scheduled and laid out but not yet run.
    private struct PreparedStep {
        let batch: StepBatch
        /// The requests that sample, in logit-row order, with their context once the step has run.
        let sampled: [(handle: Int, contextLength: Int)]
        /// Per sampled request, how it picks; nil for a request whose choice needs the token the step in flight is
        /// sampling for it (penalties read every token).
        let choices: [TokenChoice?]
        let returnLogits: [Bool]
        let scored: [(handle: Int, position: Int)]
        /// Rows whose input is the token the step in flight is sampling for this request.
        let fed: [(row: Int, handle: Int)]
        let sequences: Int
    }

    /// The step the device is running, whose tokens are not taken in yet.
    private var inFlight: LaunchedStep?

    /// While the device runs a step, the next is scheduled and laid out on the host (vLLM's async scheduling,
    /// SGLang's overlap scheduler): each request in flight counts on one more token, the rows that need it take it
    /// on the device, the next step is queued before the one in flight ends, and its tokens are streamed after. A
    /// request that stops on the token just read leaves a wasted row in the step behind it, which is dropped. Where
    /// the runner computes in place (the CPU), tokens are back before the next step is scheduled: nothing runs ahead.
    private func stepLoop() {
        while true {
            let commands = inbox.update { commands -> [Command] in
                defer { commands.removeAll() }
                return commands
            }
            commands.forEach(handle)
            if let step = inFlight, step.output.tokens.isReady || !configuration.scheduleAhead {
                inFlight = nil
                complete(step)
            }
            if inFlight == nil && scheduler.isIdle && !drainWaiters.isEmpty {
                drainWaiters.forEach { $0.resume() }
                return
            }
            let previous = inFlight
            inFlight = prepare().map { launch($0, after: previous) }
            if let previous {
                complete(previous)
            } else if inFlight == nil {
                publishStats()  // loads started or done, adapters unregistered: shown while nothing runs
                wake.wait()
            }
        }
    }

    private func handle(_ command: Command) {
        switch command {
        case let .submit(request):
            let handle = nextHandle
            nextHandle += 1
            requests[handle] = request
            handleOfID[request.request.id] = handle
            // Scoring the prompt takes every prompt position's logits: such a request computes them all itself.
            let group = request.request.sampling.promptLogprobs == nil ? request.request.promptGroup : nil
            scheduler.add(id: handle, adapter: request.request.adapter, knownTokens: request.tokens.count, group: group)
        case let .cancel(id):
            if let handle = handleOfID[id] { finish(handle, .cancelled) }
        case let .adapterRegistered(name):
            residency.register(name)
        case let .adapterLoaded(name, ticket, result):
            switch result {
            case let .success(adapter):
                if residency.loaded(name, ticket: ticket, bytes: adapter.byteCount) { hostAdapters[name] = adapter }
            case let .failure(error):
                // Requests waiting for it cannot run: end them with the reason.
                guard residency.loadFailed(name, ticket: ticket) else { break }
                for (handle, request) in requests where request.request.adapter == name {
                    finish(handle, .error, message: "adapter \"\(name)\" failed to load: \(error)")
                }
            }
        case let .unregister(name, reply):
            let users = requests.values.filter { $0.request.adapter == name }.count
            if users > 0 {
                reply.resume(throwing: RequestError.adapterInUse(name, requests: users))
            } else {
                registry.update { $0[name] = nil }
                perform(residency.unregister(name))
                reply.resume()
            }
        case let .drain(reply):
            drainWaiters.append(reply)
        }
    }

    /// Schedules the next step and lays out its batch; nil when there is nothing to run.
    private func prepare() -> PreparedStep? {
        perform(residency.plan(running: Set(scheduler.running.compactMap(\.adapter)), waiting: scheduler.waiting.compactMap(\.adapter)))
        let work = scheduler.schedule(readyAdapters: residency.ready)
        guard !work.isEmpty else { return nil }

        // Rows grouped by adapter slot, so each adapter's rows form one segment; base-only rows first.
        let ordered = work.sorted { (slotOf($0.id) ?? -1, $0.id) < (slotOf($1.id) ?? -1, $1.id) }
        var tokens: [Int32] = []
        var sequences: [StepBatch.Sequence] = []
        var segments: [LoRASegment] = []
        var sampled: [(handle: Int, contextLength: Int)] = []
        var choices: [TokenChoice?] = []
        var logitRows: [Int] = []
        var fed: [(row: Int, handle: Int)] = []
        // Prompt rows whose logits score the next prompt token, for requests asking for prompt logprobs: after the
        // sampled rows in the output, with (handle, position) of each.
        var promptRows: [Int] = []
        var scored: [(handle: Int, position: Int)] = []
        for item in ordered {
            let request = requests[item.id]!
            let rows = tokens.count ..< tokens.count + item.count
            let first = item.contextLength - item.count
            // Known tokens, then at most one that the step in flight is sampling.
            let known = min(item.contextLength, request.tokens.count)
            tokens += request.tokens[min(first, known) ..< known].map(Int32.init)
            let pending = item.contextLength - max(first, known)
            precondition(pending <= 1 && (pending == 0 || inFlight?.sampled.contains(item.id) == true),
                         "only the step in flight samples a token a step needs")
            if pending == 1 {
                fed.append((tokens.count, item.id))
                tokens.append(0)
            }
            sequences.append(StepBatch.Sequence(rows: rows, contextLength: item.contextLength, blockTable: item.pages))
            if let slot = slotOf(item.id) { segments.append(rows: rows, slot: slot) }
            if item.samples {
                logitRows.append(rows.upperBound - 1)
                sampled.append((item.id, item.contextLength))
                choices.append(pending == 1 && request.request.sampling.penalizesHistory ? nil : request.nextChoice(unknown: pending))
            }
            for position in request.unscoredPromptPositions(first ..< item.contextLength) {
                promptRows.append(rows.lowerBound + position - first)
                scored.append((item.id, position))
            }
        }
        return PreparedStep(batch: StepBatch(tokens: tokens, sequences: sequences, loraSegments: segments, logitRows: logitRows + promptRows),
                            sampled: sampled, choices: choices,
                            returnLogits: sampled.map { requests[$0.handle]!.request.sampling.logprobs > 0 } + scored.map { _ in true },
                            scored: scored, fed: fed, sequences: work.count)
    }

    /// Queues the step. Rows whose input the step in flight is still sampling take it on the device, so nothing
    /// waits for that step; only penalized choices wait, for the ids they read.
    private func launch(_ step: PreparedStep, after previous: LaunchedStep?) -> LaunchedStep {
        var choices = step.choices
        var fed: FedTokens?
        if let previous, !step.fed.isEmpty {
            let rowOf = Dictionary(uniqueKeysWithValues: previous.sampled.enumerated().map { ($1, $0) })
            fed = FedTokens(source: previous.output.tokens, rows: step.fed.map { ($0.row, rowOf[$0.handle]!) })
            for (index, (handle, _)) in step.sampled.enumerated() where choices[index] == nil {
                choices[index] = requests[handle]!.nextChoice(after: previous.output.tokens.ids[rowOf[handle]!])
            }
        }
        let output = runner.run(step.batch, fed: fed, choices: choices.map { $0! } + step.scored.map { _ in .greedy },
                                returnLogits: step.returnLogits)
        // The token this step samples joins each request's known tokens now, so the next step can be scheduled
        // before it is read, unless it is the request's last (its length limit).
        for (handle, contextLength) in step.sampled where !requests[handle]!.reachesLength(tokens: contextLength + 1, contextLimit: maxContextLength) {
            scheduler.appendToken(id: handle)
        }
        return LaunchedStep(output: output, sampled: step.sampled.map(\.handle), scored: step.scored, sequences: step.sequences,
                            tokens: step.batch.rowCount)
    }

    /// Takes in a step's tokens: scores prompt positions, streams each sampled token, ends requests that are done.
    /// A request that ended while the step ran (cancelled, or stopped by the token before) has its row dropped.
    private func complete(_ step: LaunchedStep) {
        let ids = step.output.tokens.ids
        for (index, (handle, position)) in step.scored.enumerated() {
            requests[handle]?.score(position: position, logits: step.output.logits[step.sampled.count + index]!)
        }
        for (row, handle) in step.sampled.enumerated() {
            guard let request = requests[handle] else { continue }
            // An id outside the vocabulary (`TokenChoice.nonFinite`) means this row's logits could not be sampled:
            // a corrupt adapter or weight. Only this request ends; the rest of the batch is unaffected.
            guard (0..<runner.vocabularySize).contains(ids[row]) else {
                finish(handle, .error, message: ids[row] == TokenChoice.nonFinite
                    ? "the model produced non-finite logits (NaN or infinity)\(request.request.adapter.map { " with adapter \"\($0)\"" } ?? "")"
                    : "the backend returned token id \(ids[row]), outside the vocabulary of \(runner.vocabularySize)")
                continue
            }
            request.reportPromptLogprobs()
            // `max_tokens` 0 (scoring a prompt): the sampled token is dropped.
            if request.request.sampling.maxTokens == 0 {
                finish(handle, .length)
                continue
            }
            if let reason = request.accept(ids[row], logits: step.output.logits[row], eos: eos, contextLimit: maxContextLength) {
                finish(handle, reason)
            }
        }
        throughput.record(tokens: step.sampled.count, at: ContinuousClock.now)
        publishStats(step: (sequences: step.sequences, tokens: step.tokens))
    }

    private func slotOf(_ handle: Int) -> Int? { requests[handle]?.request.adapter.flatMap { residency.slot(of: $0) } }

    /// Carries out what adapter residency decided, in order.
    private func perform(_ actions: [AdapterResidency.Action]) {
        for action in actions {
            switch action {
            case let .load(name, ticket):
                let directory = registry.read { $0[name] }
                loaders.async { [self] in
                    post(.adapterLoaded(name, ticket: ticket, Result {
                        guard let directory else { throw RequestError.unknownAdapter(name, known: []) }
                        return try runner.loadAdapter(name: name, directory: directory)
                    }))
                }
            case let .dropHost(name):
                hostAdapters[name] = nil
            case let .evict(slot):
                // The step in flight may still read the slot (a row of a request that just ended): its memory goes
                // once that step is done.
                _ = inFlight?.output.tokens.ids
                runner.setSlot(slot, to: nil)
            case let .upload(name, slot):
                guard let adapter = hostAdapters[name] else { preconditionFailure("residency uploads \(name) only from its host copy") }
                runner.setSlot(slot, to: adapter)
            }
        }
    }

    /// Ends a request: its pages go back, its stream gets the final event.
    private func finish(_ handle: Int, _ reason: FinishReason, message: String? = nil) {
        guard let request = requests.removeValue(forKey: handle) else { return }
        handleOfID[request.request.id] = nil
        scheduler.remove(id: handle)
        admission.update { $0.queued -= 1 }
        // The snapshot shows the freed pages before the caller hears the request is over.
        publishStats()
        request.finish(reason, message: message)
    }

    /// Refreshes the snapshot callers read; `step` describes a step that just ran.
    private func publishStats(step: (sequences: Int, tokens: Int)? = nil) {
        var perAdapter: [String: Int] = [:]
        for request in requests.values { perAdapter[request.request.adapter ?? "", default: 0] += 1 }
        let rate = throughput.tokensPerSecond(at: ContinuousClock.now)
        let (running, waiting, used, shared) = (scheduler.running.count, scheduler.waiting.count, scheduler.allocator.usedCount,
                                                scheduler.sharedPromptTokens)
        let runningAdapters = Set(scheduler.running.compactMap(\.adapter)), waitingAdapters = Set(scheduler.waiting.compactMap(\.adapter))
        // Copied only when residency changed: it lists every registered adapter.
        if residency.version != publishedResidency.version {
            publishedResidency = (residency.version, residency.states.filter { $0.value != .registered })
        }
        let (adapterStates, hostBytes) = (publishedResidency.states, residency.hostBytes)
        snapshot.update { stats in
            stats.running = running
            stats.waiting = waiting
            stats.kvPagesUsed = used
            stats.sharedPromptTokens = shared
            stats.requestsPerAdapter = perAdapter
            stats.runningAdapters = runningAdapters
            stats.waitingAdapters = waitingAdapters
            stats.generatedTokensPerSecond = rate
            stats.adapterStates = adapterStates
            stats.adapterHostBytes = hostBytes
            if let step {
                stats.steps += 1
                stats.lastStepSequences = step.sequences
                stats.lastStepTokens = step.tokens
            }
        }
    }
}

/// One request in flight: its tokens so far, its sampler, its text and its stream.
private final class LiveRequest {
    let request: EngineRequest
    private(set) var tokens: [Int]
    private var sampler: Sampler
    private var text: TextStream
    private let continuation: AsyncStream<GenerationEvent>.Continuation

    init(_ request: EngineRequest, continuation: AsyncStream<GenerationEvent>.Continuation, tokenizer: Tokenizer, eos: Set<Int>) {
        self.request = request
        self.continuation = continuation
        tokens = request.promptIDs
        sampler = Sampler(request.sampling, promptLength: request.promptIDs.count, eos: eos)
        promptLogprobs = Array(repeating: nil, count: request.sampling.promptLogprobs == nil ? 0 : request.promptIDs.count - 1)
        text = TextStream(tokenizer: tokenizer, stops: request.sampling.stopStrings, skipSpecialTokens: request.sampling.skipSpecialTokens)
    }

    var generatedCount: Int { tokens.count - request.promptIDs.count }

    /// Per prompt position p < count − 1, the logprobs of prompt token p + 1 (nil until computed); empty when the
    /// request did not ask for prompt logprobs.
    private var promptLogprobs: [TokenLogprobs?]
    private var promptReported = false

    /// Of `positions` (a step's rows), those whose logits would score a prompt token not scored yet.
    func unscoredPromptPositions(_ positions: Range<Int>) -> [Int] {
        positions.clamped(to: 0 ..< promptLogprobs.count).filter { promptLogprobs[$0] == nil }
    }

    func score(position: Int, logits: [Float]) {
        let token = request.promptIDs[position + 1]
        promptLogprobs[position] = logits.withUnsafeBufferPointer { logprobs($0, token: token, top: request.sampling.promptLogprobs ?? 0) }
    }

    /// Streams the prompt's logprobs, once, before the first token (every prompt row has been scored by then).
    func reportPromptLogprobs() {
        guard request.sampling.promptLogprobs != nil, !promptReported else { return }
        promptReported = true
        continuation.yield(.prompt(logprobs: promptLogprobs.map { $0! }))
    }

    /// Whether the request is done by length once it has `tokens` tokens (prompt included): `max_tokens` generated or
    /// the context full.
    func reachesLength(tokens: Int, contextLimit: Int) -> Bool {
        tokens - request.promptIDs.count >= request.sampling.maxTokens || tokens >= contextLimit
    }

    /// How the step picks this request's next token, the last `unknown` tokens of its history still being sampled.
    func nextChoice(unknown: Int) -> TokenChoice { sampler.choice(history: tokens, unknown: unknown) }

    /// How the step picks this request's next token once `pending`, sampled but not yet taken in, is known.
    func nextChoice(after pending: Int) -> TokenChoice { sampler.choice(history: tokens + [pending]) }

    /// Takes the step's token (and its raw logits when logprobs were asked for) and streams it; returns a finish
    /// reason when the request is done.
    func accept(_ token: Int, logits: [Float]?, eos: Set<Int>, contextLimit: Int) -> FinishReason? {
        let parameters = request.sampling
        tokens.append(token)
        let scored = logits?.withUnsafeBufferPointer { logprobs($0, token: token, top: parameters.logprobs) }
        var delta = ""
        var reason: FinishReason?
        if parameters.stopTokenIDs.contains(token) || (!parameters.ignoreEOS && eos.contains(token)) {
            // The stop token's own text is not part of the output; what was held back is.
            reason = .stop
            delta = text.finish()
        } else {
            let (appended, stopped) = text.append(token)
            delta = appended
            if stopped {
                reason = .stop
            } else if reachesLength(tokens: tokens.count, contextLimit: contextLimit) {
                reason = .length
                delta += text.finish()
            }
        }
        continuation.yield(.token(id: token, text: delta, logprob: scored?.chosen, top: scored?.top ?? []))
        return reason
    }

    func finish(_ reason: FinishReason, message: String?) {
        continuation.yield(.finished(reason: reason, usage: Usage(promptTokens: request.promptIDs.count, completionTokens: generatedCount),
                                     message: message))
        continuation.finish()
    }
}

/// Generated tokens over the last few seconds.
private struct ThroughputWindow {
    private var samples: [(time: ContinuousClock.Instant, tokens: Int)] = []
    private let window = Duration.seconds(5)

    mutating func record(tokens: Int, at now: ContinuousClock.Instant) {
        samples.append((now, tokens))
        samples.removeAll { now - $0.time > window }
    }

    func tokensPerSecond(at now: ContinuousClock.Instant) -> Double {
        guard let first = samples.first, samples.count > 1 else { return 0 }
        let elapsed = now - first.time
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        return seconds > 0 ? Double(samples.dropFirst().reduce(0) { $0 + $1.tokens }) / seconds : 0
    }
}

/// A detached OS thread: the step loop blocks between steps, so it must not occupy a shared executor's thread.
enum Thread {
    static func detach(_ body: @escaping () -> Void) {
        final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let created = pthread_create(&thread, nil, { pointer in
            let box = Unmanaged<AnyObject>.fromOpaque(pointer!).takeRetainedValue() as! Box
            box.body()
            return nil
        }, box)
        precondition(created == 0, "could not start the engine thread (pthread_create: \(created))")
        pthread_detach(thread)
    }
}
