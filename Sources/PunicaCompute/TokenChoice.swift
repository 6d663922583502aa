#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How one logits row becomes a token, already reduced to numbers: what `Backend.sample` reads. The engine's
/// per-request sampler draws `uniform` from the request's own generator, so a seeded request samples the same
/// tokens on every backend and whatever else shares its batch.
public struct TokenChoice: Sendable, Equatable {
    /// 0 picks the largest logit (the first on ties).
    public var temperature: Float
    /// Keep tokens whose logit is at least the `topK`-th largest (0: all).
    public var topK: Int
    /// Then keep the most likely tokens whose probabilities first reach `topP` of the kept mass (1: all).
    public var topP: Float
    /// Where in [0, 1) of the kept mass the draw lands.
    public var uniform: Float
    /// HF's repetition penalty on `penalized` (distinct token ids): logit / p if positive, · p if not (1: off).
    public var repetitionPenalty: Float
    public var penalized: [Int32]
    /// Added to the logits before the repetition penalty (logit_bias; −∞ masks a token).
    public var bias: [Int32: Float]
    /// Subtracted from the logits after the repetition penalty (frequency and presence penalties).
    public var subtracted: [Int32: Float]
    /// Keep tokens whose probability (at `temperature`) is at least `minP` × the most likely one's (0: all).
    public var minP: Float

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, uniform: Float = 0, repetitionPenalty: Float = 1,
                penalized: [Int32] = [], bias: [Int32: Float] = [:], subtracted: [Int32: Float] = [:], minP: Float = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.uniform = uniform
        self.repetitionPenalty = repetitionPenalty
        self.penalized = penalized
        self.bias = bias
        self.subtracted = subtracted
        self.minP = minP
    }

    /// log(minP), −∞ when off: the min-p threshold is `max + temperature · logMinP`, computed the same way (no fused
    /// multiply-add) on every backend so the kept set is the same.
    public var logMinP: Float { minP > 0 ? log(minP) : -.infinity }

    /// The adjusted logit of `token`: (logit + bias), repetition-penalized if `penalized`, minus `subtracted`. Backends
    /// apply it to the union of the three sets' tokens, where the identity elsewhere makes it a no-op.
    @inline(__always)
    public static func adjust(_ logit: Float, bias: Float, penalty: Float, subtracted: Float) -> Float {
        let biased = logit + bias
        let penalized = penalty == 1 ? biased : biased > 0 ? biased / penalty : biased * penalty
        return penalized - subtracted
    }

    /// Each token the adjustment changes, with (bias, penalty, subtracted), in token order.
    public var adjustments: [(token: Int32, bias: Float, penalty: Float, subtracted: Float)] {
        let penalizedSet = repetitionPenalty == 1 ? [] : Set(penalized)
        let tokens = Set(bias.keys).union(subtracted.keys).union(penalizedSet).sorted()
        return tokens.map { ($0, bias[$0] ?? 0, penalizedSet.contains($0) ? repetitionPenalty : 1, subtracted[$0] ?? 0) }
    }

    public static let greedy = TokenChoice()

    /// What `pick` (and `Backend.sample`) returns for a row it cannot sample: one whose logits, after the penalty,
    /// hold a NaN or +∞ (the softmax is undefined) or are all −∞ (nothing can be drawn). −∞ on some tokens is a mask
    /// and is fine. A corrupt adapter or weight shows up here; the engine ends that request alone with an error.
    public static let nonFinite = -1

    /// The reference semantics of `Backend.sample`, which every backend reproduces:
    /// 0. a row whose adjusted logits hold a NaN or +∞, or are all −∞, gives `nonFinite`;
    /// 1. `adjust` (bias, repetition penalty, subtracted penalties) changes their tokens' logits; temperature 0 then
    ///    takes the largest;
    /// 2. min-p keeps logits ≥ max + temperature · logMinP; of those top-k keeps logits ≥ the k-th largest, top-p
    ///    then keeps logits ≥ t for the largest logit t whose kept tokens' weights exp((logit − max) / temperature)
    ///    reach topP of the kept mass (ties are kept together);
    /// 3. the token is the first kept one, in vocabulary order, whose running weight exceeds `uniform` × kept mass.
    public func pick(_ logits: UnsafeBufferPointer<Float>) -> Int {
        let kept = keptWeights(logits)
        guard let first = kept.first else { return Self.nonFinite }
        guard temperature > 0 else { return first.token }
        let total = kept.reduce(0.0) { $0 + Double($1.weight) }
        let target = Double(uniform) * total
        var running = 0.0
        for (token, weight) in kept {
            running += Double(weight)
            if running > target { return token }
        }
        return kept[kept.count - 1].token
    }

    /// The tokens that may be drawn, in vocabulary order, with their unnormalized weights; the single largest
    /// logit when greedy; none when the row cannot be sampled (see `nonFinite`).
    public func keptWeights(_ logits: UnsafeBufferPointer<Float>) -> [(token: Int, weight: Float)] {
        var adjusted = Array(logits)
        for (token, bias, penalty, subtracted) in adjustments where (0..<adjusted.count).contains(Int(token)) {
            adjusted[Int(token)] = Self.adjust(adjusted[Int(token)], bias: bias, penalty: penalty, subtracted: subtracted)
        }
        guard !adjusted.isEmpty, !adjusted.contains(where: { $0.isNaN || $0 == .infinity }) else { return [] }
        var best = 0
        for i in adjusted.indices where adjusted[i] > adjusted[best] { best = i }
        guard adjusted[best] > -.infinity else { return [] }
        guard temperature > 0 else { return [(best, 1)] }
        let maxLogit = adjusted[best]
        func weight(_ logit: Float) -> Float { exp((logit - maxLogit) / temperature) }

        var threshold = minP > 0 ? maxLogit + temperature * logMinP : -Float.infinity
        if topK > 0 || topP < 1 {
            let descending = adjusted.filter { $0 >= threshold }.sorted(by: >)
            if topK > 0 && topK < descending.count { threshold = descending[topK - 1] }
            if topP < 1 {
                let candidates = descending.prefix { $0 >= threshold }
                let weights = candidates.map { Double(weight($0)) }
                let target = Double(topP) * weights.reduce(0, +)
                var running = 0.0
                for (logit, weight) in zip(candidates, weights) {
                    running += weight
                    if running >= target {
                        threshold = logit
                        break
                    }
                }
            }
        }
        return adjusted.indices.compactMap { adjusted[$0] >= threshold ? ($0, weight(adjusted[$0])) : nil }
    }
}
