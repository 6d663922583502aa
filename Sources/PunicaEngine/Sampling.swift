#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PunicaCompute

/// How one request turns logits into tokens, and when it stops. Defaults follow vLLM's `SamplingParams`.
public struct SamplingParameters: Sendable, Equatable {
    public var maxTokens = 16
    /// 0 picks the most likely token (greedy).
    public var temperature: Float = 1
    /// Keep the smallest set of most likely tokens whose probability reaches `topP` (1: off).
    public var topP: Float = 1
    /// Keep the `topK` most likely tokens (0: off).
    public var topK = 0
    /// Keep tokens at least `minP` × as likely as the most likely one (0: off).
    public var minP: Float = 0
    /// HF's penalty on every token already in the prompt or output: logit / p if positive, · p if negative (1: off).
    public var repetitionPenalty: Float = 1
    /// Subtracted from a token's logit once it appears in the output, and per appearance (OpenAI's, −2...2).
    public var presencePenalty: Float = 0
    public var frequencyPenalty: Float = 0
    /// Added to token ids' logits (OpenAI's, −100...100; −100 bans in practice).
    public var logitBias: [Int: Float] = [:]
    /// End-of-sequence and stop tokens cannot be drawn before this many tokens (vLLM's `min_tokens`).
    public var minTokens = 0
    /// Special tokens (EOS, chat markers) left out of the streamed text.
    public var skipSpecialTokens = true
    /// Makes sampling reproducible for this request whatever else is in the batch.
    public var seed: UInt64?
    public var stopTokenIDs: [Int] = []
    /// Generation ends when the text contains one of these; the returned text stops before it.
    public var stopStrings: [String] = []
    /// How many most likely tokens to report with each generated token (0: none).
    public var logprobs = 0
    /// vLLM's `prompt_logprobs`: report each prompt token's logprob (after the first) with this many most likely
    /// tokens, in one `.prompt` event before the first token (nil: none, and nothing computed for the prompt).
    public var promptLogprobs: Int?
    /// Keep going past the model's end-of-sequence tokens.
    public var ignoreEOS = false

    public init() {}

    public static let maxLogprobs = 20

    /// Whether the choice of a token depends on which tokens came before (the penalties), not only on how many.
    public var penalizesHistory: Bool { repetitionPenalty != 1 || presencePenalty != 0 || frequencyPenalty != 0 }

    /// Checks every field against its limits.
    public func validate() throws(RequestError) {
        func check(_ ok: Bool, _ field: String, _ rule: String, _ value: Any) throws(RequestError) {
            if !ok { throw RequestError.invalid(field: field, reason: "must be \(rule). Given: \(value)") }
        }
        // 0 generates nothing: what scoring a prompt by its `promptLogprobs` asks for.
        try check(maxTokens >= 0, "max_tokens", ">= 0", maxTokens)
        try check(temperature >= 0 && temperature.isFinite, "temperature", ">= 0", temperature)
        try check(topP > 0 && topP <= 1, "top_p", "> 0 and <= 1", topP)
        try check(topK >= 0, "top_k", ">= 0 (0 disables it)", topK)
        try check(minP >= 0 && minP <= 1, "min_p", ">= 0 and <= 1", minP)
        try check(repetitionPenalty > 0 && repetitionPenalty.isFinite, "repetition_penalty", "> 0", repetitionPenalty)
        try check(presencePenalty >= -2 && presencePenalty <= 2, "presence_penalty", ">= -2 and <= 2", presencePenalty)
        try check(frequencyPenalty >= -2 && frequencyPenalty <= 2, "frequency_penalty", ">= -2 and <= 2", frequencyPenalty)
        if let bad = logitBias.first(where: { !($0.value >= -100 && $0.value <= 100) }) {
            try check(false, "logit_bias", "values >= -100 and <= 100", "\(bad.value) for token \(bad.key)")
        }
        try check(minTokens >= 0 && minTokens <= maxTokens, "min_tokens", ">= 0 and <= max_tokens (\(maxTokens))", minTokens)
        try check((0...Self.maxLogprobs).contains(logprobs), "logprobs", ">= 0 and <= \(Self.maxLogprobs)", logprobs)
        if let promptLogprobs {
            try check((0...Self.maxLogprobs).contains(promptLogprobs), "prompt_logprobs", ">= 0 and <= \(Self.maxLogprobs)", promptLogprobs)
        }
        try check(!stopStrings.contains(""), "stop", "non-empty strings", stopStrings)
    }
}

/// A request the engine refuses, naming the field and its limit.
public enum RequestError: Error, CustomStringConvertible, Equatable {
    case invalid(field: String, reason: String)
    case unknownAdapter(String, known: [String])
    case adapterInUse(String, requests: Int)
    case queueFull(limit: Int)
    case shuttingDown

    public var description: String {
        switch self {
        case let .invalid(field, reason): "`\(field)` \(reason)"
        case let .unknownAdapter(name, known):
            "adapter \"\(name)\" is not registered (registered: \(known.isEmpty ? "none" : known.joined(separator: ", ")))"
        case let .adapterInUse(name, requests):
            "adapter \"\(name)\" is in use by \(requests) request(s); unregister it when they finish"
        case let .queueFull(limit): "the queue is full (\(limit) requests waiting); retry later"
        case .shuttingDown: "the server is shutting down"
        }
    }
}

/// A token and its log-probability under the model's distribution (before temperature, top-k/p and penalties).
public struct TokenLogprob: Sendable, Equatable, Codable {
    public var id: Int
    public var logprob: Float

    public init(id: Int, logprob: Float) {
        self.id = id
        self.logprob = logprob
    }
}

/// A token's logprob with the most likely tokens at its position: what `.prompt` reports per prompt token.
public struct TokenLogprobs: Sendable, Equatable {
    public var chosen: TokenLogprob
    /// 1 + how many tokens are more likely than `chosen` (vLLM's rank).
    public var rank: Int
    public var top: [TokenLogprob]

    public init(chosen: TokenLogprob, rank: Int, top: [TokenLogprob]) {
        self.chosen = chosen
        self.rank = rank
        self.top = top
    }
}

/// One request's sampling state: turns its parameters and history into each step's `TokenChoice` (the backend
/// then picks the token where the logits are; `TokenChoice.pick` defines how), drawing from the request's own
/// generator so a seeded request is reproducible whatever shares its batch.
public struct Sampler {
    public let parameters: SamplingParameters
    private let promptLength: Int
    /// What `minTokens` holds back: stop token ids and, unless ignored, end-of-sequence ids.
    private let endTokens: Set<Int>
    private var random: SplitMix64

    /// - Parameters: promptLength: how much of each `history` is prompt (penalties by occurrence count the output
    ///   only, as vLLM's do); eos: the model's end-of-sequence ids.
    public init(_ parameters: SamplingParameters, promptLength: Int = 0, eos: Set<Int> = []) {
        self.parameters = parameters
        self.promptLength = promptLength
        endTokens = Set(parameters.stopTokenIDs).union(parameters.ignoreEOS ? [] : eos)
        random = SplitMix64(seed: parameters.seed ?? UInt64.random(in: .min ... .max))
    }

    /// The next token's choice; `history` is the prompt plus the tokens generated so far, but for the last
    /// `unknown` of them, still being sampled by a step in flight: their number is all a choice needs unless the
    /// parameters penalize history.
    public mutating func choice(history: [Int], unknown: Int = 0) -> TokenChoice {
        let p = parameters
        precondition(unknown == 0 || !p.penalizesHistory, "penalties read every token of the history")
        var bias = Dictionary(uniqueKeysWithValues: p.logitBias.map { (Int32($0.key), $0.value) })
        if history.count + unknown - promptLength < p.minTokens {
            for token in endTokens { bias[Int32(token)] = -.infinity }
        }
        var subtracted: [Int32: Float] = [:]
        if p.presencePenalty != 0 || p.frequencyPenalty != 0 {
            var counts: [Int32: Int] = [:]
            for token in history.dropFirst(promptLength) { counts[Int32(token), default: 0] += 1 }
            subtracted = counts.mapValues { p.presencePenalty + p.frequencyPenalty * Float($0) }
        }
        return TokenChoice(temperature: p.temperature, topK: p.topK, topP: p.topP, uniform: Float.random(in: 0..<1, using: &random),
                           repetitionPenalty: p.repetitionPenalty, penalized: p.repetitionPenalty == 1 ? [] : Set(history).map(Int32.init),
                           bias: bias, subtracted: subtracted, minP: p.minP)
    }
}

/// log-softmax of `logits` at `token`, its rank, and the `count` most likely tokens with theirs.
func logprobs(_ logits: UnsafeBufferPointer<Float>, token: Int, top count: Int) -> TokenLogprobs {
    let maxLogit = logits.max() ?? 0
    var total: Double = 0
    var above = 0
    for logit in logits {
        total += Double(exp(logit - maxLogit))
        if logit > logits[token] { above += 1 }
    }
    let logNormalizer = maxLogit + Float(log(total))
    let chosen = TokenLogprob(id: token, logprob: logits[token] - logNormalizer)
    guard count > 0 else { return TokenLogprobs(chosen: chosen, rank: above + 1, top: []) }
    // Partial selection: keep the best `count` in a small sorted array.
    var best: [Int] = []
    for i in logits.indices where best.count < count || logits[i] > logits[best[best.count - 1]] {
        let insertAt = best.firstIndex { logits[i] > logits[$0] } ?? best.count
        best.insert(i, at: insertAt)
        if best.count > count { best.removeLast() }
    }
    return TokenLogprobs(chosen: chosen, rank: above + 1, top: best.map { TokenLogprob(id: $0, logprob: logits[$0] - logNormalizer) })
}
