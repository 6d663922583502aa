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
    /// HF's penalty on every token already in the prompt or output: logit / p if positive, · p if negative (1: off).
    public var repetitionPenalty: Float = 1
    /// Makes sampling reproducible for this request whatever else is in the batch.
    public var seed: UInt64?
    public var stopTokenIDs: [Int] = []
    /// Generation ends when the text contains one of these; the returned text stops before it.
    public var stopStrings: [String] = []
    /// How many most likely tokens to report with each generated token (0: none).
    public var logprobs = 0
    /// Keep going past the model's end-of-sequence tokens.
    public var ignoreEOS = false

    public init() {}

    public static let maxLogprobs = 20

    /// Checks every field against its limits.
    public func validate() throws(RequestError) {
        func check(_ ok: Bool, _ field: String, _ rule: String, _ value: Any) throws(RequestError) {
            if !ok { throw RequestError.invalid(field: field, reason: "must be \(rule). Given: \(value)") }
        }
        try check(maxTokens >= 1, "max_tokens", ">= 1", maxTokens)
        try check(temperature >= 0 && temperature.isFinite, "temperature", ">= 0", temperature)
        try check(topP > 0 && topP <= 1, "top_p", "> 0 and <= 1", topP)
        try check(topK >= 0, "top_k", ">= 0 (0 disables it)", topK)
        try check(repetitionPenalty > 0 && repetitionPenalty.isFinite, "repetition_penalty", "> 0", repetitionPenalty)
        try check((0...Self.maxLogprobs).contains(logprobs), "logprobs", ">= 0 and <= \(Self.maxLogprobs)", logprobs)
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

/// One request's sampling state: turns its parameters and history into each step's `TokenChoice` (the backend
/// then picks the token where the logits are; `TokenChoice.pick` defines how), drawing from the request's own
/// generator so a seeded request is reproducible whatever shares its batch.
public struct Sampler {
    public let parameters: SamplingParameters
    private var random: SplitMix64

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        random = SplitMix64(seed: parameters.seed ?? UInt64.random(in: .min ... .max))
    }

    /// The next token's choice; `history` is the prompt plus the tokens generated so far.
    public mutating func choice(history: [Int]) -> TokenChoice {
        TokenChoice(temperature: parameters.temperature, topK: parameters.topK, topP: parameters.topP,
                    uniform: Float.random(in: 0..<1, using: &random), repetitionPenalty: parameters.repetitionPenalty,
                    penalized: parameters.repetitionPenalty == 1 ? [] : Set(history).map(Int32.init))
    }
}

/// log-softmax of `logits` at `token`, and the `count` most likely tokens with theirs.
func logprobs(_ logits: UnsafeBufferPointer<Float>, token: Int, top count: Int) -> (chosen: TokenLogprob, top: [TokenLogprob]) {
    let maxLogit = logits.max() ?? 0
    var total: Double = 0
    for logit in logits { total += Double(exp(logit - maxLogit)) }
    let logNormalizer = maxLogit + Float(log(total))
    let chosen = TokenLogprob(id: token, logprob: logits[token] - logNormalizer)
    guard count > 0 else { return (chosen, []) }
    // Partial selection: keep the best `count` in a small sorted array.
    var best: [Int] = []
    for i in logits.indices where best.count < count || logits[i] > logits[best[best.count - 1]] {
        let insertAt = best.firstIndex { logits[i] > logits[$0] } ?? best.count
        best.insert(i, at: insertAt)
        if best.count > count { best.removeLast() }
    }
    return (chosen, best.map { TokenLogprob(id: $0, logprob: logits[$0] - logNormalizer) })
}
