import PunicaCompute
import PunicaTokenizer

/// A request to the serving engine: a prompt (already tokenized), the adapter to use (nil: the base model) and how
/// to sample.
public struct EngineRequest: Sendable {
    public var id: String
    public var promptIDs: [Int]
    public var adapter: String?
    public var sampling: SamplingParameters
    /// Requests of one group (a prompt's `n` choices: the same prompt and adapter) share the prompt's prefill: one
    /// computes its KV, the others take the full pages of it and compute only the rest. nil: shares nothing.
    public var promptGroup: String?

    public init(id: String, promptIDs: [Int], adapter: String? = nil, sampling: SamplingParameters = SamplingParameters(),
                promptGroup: String? = nil) {
        self.id = id
        self.promptIDs = promptIDs
        self.adapter = adapter
        self.sampling = sampling
        self.promptGroup = promptGroup
    }
}

public enum FinishReason: String, Sendable, Codable {
    /// An end-of-sequence token, a stop token or a stop string.
    case stop
    /// `max_tokens`, or the model's context length.
    case length
    /// The client cancelled it (or went away).
    case cancelled
    /// The engine could not finish it (its adapter was unregistered, say); the final event carries the message.
    case error
}

/// Tokens of a finished request.
public struct Usage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int

    public init(promptTokens: Int, completionTokens: Int) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }
}

/// What a request's stream yields: one `.token` per generated token, then exactly one `.finished`.
public enum GenerationEvent: Sendable, Equatable {
    /// `text` is the new text this token completes: empty while a character is incomplete or while the text might
    /// be the start of a stop string (held back, then released or cut). `logprob` is the chosen token's, and `top`
    /// the request's `logprobs` most likely tokens; both only when the request asked for logprobs.
    case token(id: Int, text: String, logprob: TokenLogprob?, top: [TokenLogprob])
    /// Only for requests with `promptLogprobs`, once, before the first `.token`: prompt tokens 1..<count, each scored
    /// by the logits of the position before it (the first prompt token has none).
    case prompt(logprobs: [TokenLogprobs])
    /// The last event. `message` explains `.error`.
    case finished(reason: FinishReason, usage: Usage, message: String?)
}

/// A snapshot of the engine.
public struct EngineStats: Sendable, Equatable {
    public var running: Int
    public var waiting: Int
    public var kvPagesUsed: Int
    public var kvPagesTotal: Int
    /// Tokens per KV page, and the type keys and values are stored in.
    public var pageSize: Int
    public var kvCacheDType: DType
    /// Adapters a step can use at once (vLLM's `max_loras`).
    public var adapterSlots: Int
    /// Requests running or waiting, by adapter name ("" for the base model).
    public var requestsPerAdapter: [String: Int]
    /// Adapters of the requests in the running batch, and of those waiting for it.
    public var runningAdapters: Set<String>
    public var waitingAdapters: Set<String>
    /// Tokens generated per second over the last few seconds.
    public var generatedTokensPerSecond: Double
    /// Steps run so far, and the sequences and token rows of the last one (its batch size).
    public var steps: Int
    public var lastStepSequences: Int
    public var lastStepTokens: Int
    /// Prompt tokens not computed, their KV pages shared within a prompt group (`EngineRequest.promptGroup`), so far.
    public var sharedPromptTokens: Int
    /// Adapters past registered (loading, on host, resident in a slot: `AdapterResidency`), and the bytes of the host tier.
    public var adapterStates: [String: AdapterResidency.State]
    public var adapterHostBytes: Int

    public init(running: Int, waiting: Int, kvPagesUsed: Int, kvPagesTotal: Int, pageSize: Int = 16, kvCacheDType: DType = .float32, adapterSlots: Int = 0,
                requestsPerAdapter: [String: Int], runningAdapters: Set<String> = [], waitingAdapters: Set<String> = [],
                adapterStates: [String: AdapterResidency.State] = [:], adapterHostBytes: Int = 0,
                generatedTokensPerSecond: Double, steps: Int, lastStepSequences: Int, lastStepTokens: Int, sharedPromptTokens: Int = 0) {
        self.running = running
        self.waiting = waiting
        self.kvPagesUsed = kvPagesUsed
        self.kvPagesTotal = kvPagesTotal
        self.pageSize = pageSize
        self.kvCacheDType = kvCacheDType
        self.adapterSlots = adapterSlots
        self.requestsPerAdapter = requestsPerAdapter
        self.runningAdapters = runningAdapters
        self.waitingAdapters = waitingAdapters
        self.adapterStates = adapterStates
        self.adapterHostBytes = adapterHostBytes
        self.generatedTokensPerSecond = generatedTokensPerSecond
        self.steps = steps
        self.lastStepSequences = lastStepSequences
        self.lastStepTokens = lastStepTokens
        self.sharedPromptTokens = sharedPromptTokens
    }
}

/// What the HTTP server, `punica generate` and the demo need from the engine. The engine implements it; tests use a
/// scripted fake.
public protocol GenerationService: AnyObject, Sendable {
    /// The tokenizer of the base model (prompts are tokenized by the caller, texts streamed back by the engine).
    var tokenizer: Tokenizer { get }
    /// The model's context length: prompt plus generated tokens.
    var maxContextLength: Int { get }
    /// Registered adapter names, sorted.
    func adapterNames() -> [String]
    /// Validates and queues a request. Throws `RequestError` (invalid field, unknown adapter, queue full, shutting
    /// down) before anything runs; otherwise the stream yields its events and ends after `.finished`.
    func submit(_ request: EngineRequest) throws(RequestError) -> AsyncStream<GenerationEvent>
    /// Ends a request (its stream finishes with `.cancelled`) and frees its KV pages within one step; unknown or
    /// finished ids are ignored.
    func cancel(id: String)
    /// Validates the adapter directory (config and weights, against the model) and registers it under `name`.
    func registerAdapter(name: String, directory: String) async throws
    /// Unregisters `name`; refused with `RequestError.adapterInUse` while requests use it.
    func unregisterAdapter(name: String) async throws
    func stats() -> EngineStats
    /// Stops accepting requests, lets running and waiting ones finish, then stops the step loop.
    func drain() async
}
