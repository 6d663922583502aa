import PunicaCompute
import PunicaModel
import PunicaTokenizer

public struct GenerationRequest: Sendable {
    public var id: String
    public var promptIDs: [Int]
    /// Name of a registered adapter; nil runs the base model.
    public var adapter: String?
    public var sampling: SamplingParameters

    public init(id: String, promptIDs: [Int], adapter: String? = nil, sampling: SamplingParameters = SamplingParameters()) {
        self.id = id
        self.promptIDs = promptIDs
        self.adapter = adapter
        self.sampling = sampling
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

public struct GenerationResult: Sendable {
    public var id: String
    public var tokenIDs: [Int]
    public var text: String
    /// Per generated token: the top `logprobs` tokens, plus the chosen one when it is not among them.
    /// nil when the request asked for none.
    public var logprobs: [[TokenLogprob]]?
    public var finishReason: FinishReason
}

/// Runs a fixed set of requests to completion, all of them in every step whatever their adapters: rows are ordered
/// by adapter so each adapter's rows form one LoRA segment; prompts are prefilled in chunks of at most
/// `maxTokensPerStep` tokens alongside other requests' decode tokens.
public final class BatchGenerator {
    public let model: LlamaModel
    public let tokenizer: Tokenizer?
    public let pageSize: Int
    public let maxTokensPerStep: Int
    private let slotOfAdapter: [String: Int]
    private let resident: ResidentAdapters

    public init(model: LlamaModel, tokenizer: Tokenizer?, adapters: [LoRAAdapter], pageSize: Int = 16,
                maxTokensPerStep: Int = 512) {
        self.model = model
        self.tokenizer = tokenizer
        self.pageSize = pageSize
        self.maxTokensPerStep = maxTokensPerStep
        slotOfAdapter = Dictionary(uniqueKeysWithValues: adapters.enumerated().map { ($1.name, $0) })
        resident = ResidentAdapters(adapters, layerCount: model.config.layerCount)
    }

    /// Checks a request before any work starts, naming the offending field.
    public func validate(_ request: GenerationRequest) throws(RequestError) {
        try request.sampling.validate()
        let config = model.config
        if request.promptIDs.isEmpty { throw .invalid(field: "prompt", reason: "must contain at least one token") }
        if let bad = request.promptIDs.first(where: { !(0..<config.vocabularySize).contains($0) }) {
            throw .invalid(field: "prompt_ids", reason: "must be in 0..<\(config.vocabularySize). Given: \(bad)")
        }
        if request.promptIDs.count >= config.maxPositionEmbeddings {
            throw .invalid(field: "prompt", reason: "has \(request.promptIDs.count) tokens; the model's context is \(config.maxPositionEmbeddings)")
        }
        if let adapter = request.adapter, slotOfAdapter[adapter] == nil {
            throw .unknownAdapter(adapter, known: slotOfAdapter.keys.sorted())
        }
    }

    public func generate(_ requests: [GenerationRequest]) throws -> [GenerationResult] {
        for request in requests { try validate(request) }
        let contextLimit = model.config.maxPositionEmbeddings
        let layout = PageLayout(pageSize: pageSize, pageCount: 1 + requests.reduce(0) {
            $0 + (min($1.promptIDs.count + $1.sampling.maxTokens, contextLimit) + pageSize - 1) / pageSize
        })
        let cache = model.makeKVCache(layout: layout)
        var allocator = BlockAllocator(pageCount: layout.pageCount)
        var sequences = requests.map { Sequence($0, slot: $0.adapter.flatMap { slotOfAdapter[$0] }, tokenizer: tokenizer) }
        let eos = Set(tokenizer?.eosTokenIDs ?? model.config.eosTokenIDs)

        while sequences.contains(where: { $0.finishReason == nil }) {
            let (batch, members) = nextStep(&sequences, allocator: &allocator, layout: layout)
            let logits = model.backend.toHost(model.forward(batch, cache: cache, adapters: resident))
            let vocabulary = model.config.vocabularySize
            logits.withUnsafeBufferPointer { all in
                for (row, index) in members.enumerated() {
                    let rowLogits = UnsafeBufferPointer(rebasing: all[row * vocabulary ..< (row + 1) * vocabulary])
                    sequences[index].accept(rowLogits, eos: eos, contextLimit: contextLimit)
                }
            }
            for index in sequences.indices where sequences[index].finishReason != nil && !sequences[index].pages.isEmpty {
                allocator.release(sequences[index].pages)
                sequences[index].pages = []
            }
        }
        return sequences.map(\.result)
    }

    /// Builds one step: decode rows first, then prompt chunks in arrival order, within `maxTokensPerStep`; rows
    /// laid out grouped by adapter. Returns the batch and, per logit row, the index of its sequence.
    private func nextStep(_ sequences: inout [Sequence], allocator: inout BlockAllocator,
                          layout: PageLayout) -> (StepBatch, [Int]) {
        var budget = maxTokensPerStep
        var chosen: [(index: Int, count: Int)] = []
        let unfinished = sequences.indices.filter { sequences[$0].finishReason == nil }
        let decoding = unfinished.filter { sequences[$0].pendingCount == 1 }
        for index in decoding + unfinished.filter({ sequences[$0].pendingCount > 1 }) where budget > 0 {
            let count = min(sequences[index].pendingCount, budget)
            budget -= count
            chosen.append((index, count))
        }
        chosen.sort { (sequences[$0.index].slot ?? -1, $0.index) < (sequences[$1.index].slot ?? -1, $1.index) }

        var tokens: [Int32] = []
        var batchSequences: [StepBatch.Sequence] = []
        var segments: [LoRASegment] = []
        var logitRows: [Int] = []
        var members: [Int] = []
        for (index, count) in chosen {
            let contextLength = sequences[index].computed + count
            let missing = layout.pagesNeeded(forTokens: contextLength) - sequences[index].pages.count
            if missing > 0 {
                // The cache was sized for every request's whole context, so this cannot run out.
                sequences[index].pages += allocator.allocate(missing)!
            }
            let rows = tokens.count ..< tokens.count + count
            tokens += sequences[index].tokens[sequences[index].computed ..< contextLength].map(Int32.init)
            batchSequences.append(StepBatch.Sequence(rows: rows, contextLength: contextLength, blockTable: sequences[index].pages))
            if let slot = sequences[index].slot {
                if let last = segments.last, last.slot == slot, last.rows.upperBound == rows.lowerBound {
                    segments[segments.count - 1].rows = last.rows.lowerBound ..< rows.upperBound
                } else {
                    segments.append(LoRASegment(rows: rows, slot: slot))
                }
            }
            sequences[index].computed = contextLength
            if contextLength == sequences[index].tokens.count {
                logitRows.append(rows.upperBound - 1)
                members.append(index)
            }
        }
        return (StepBatch(tokens: tokens, sequences: batchSequences, loraSegments: segments, logitRows: logitRows), members)
    }
}

/// One request's progress.
private struct Sequence {
    let request: GenerationRequest
    let slot: Int?
    /// Prompt then generated tokens.
    var tokens: [Int]
    /// Tokens already in the KV cache.
    var computed = 0
    var pages: [Int32] = []
    var sampler: Sampler
    var detokenizer: IncrementalDetokenizer?
    var text = ""
    var logprobs: [[TokenLogprob]] = []
    var finishReason: FinishReason?

    init(_ request: GenerationRequest, slot: Int?, tokenizer: Tokenizer?) {
        self.request = request
        self.slot = slot
        tokens = request.promptIDs
        sampler = Sampler(request.sampling)
        detokenizer = tokenizer.map { IncrementalDetokenizer(tokenizer: $0) }
    }

    var pendingCount: Int { tokens.count - computed }
    var generated: ArraySlice<Int> { tokens[request.promptIDs.count...] }

    mutating func accept(_ logits: UnsafeBufferPointer<Float>, eos: Set<Int>, contextLimit: Int) {
        let parameters = request.sampling
        let token = sampler.sample(logits, history: tokens)
        tokens.append(token)
        if parameters.logprobs > 0 {
            let (chosen, top) = PunicaEngine.logprobs(logits, token: token, top: parameters.logprobs)
            logprobs.append(top.contains { $0.id == token } ? top : top + [chosen])
        }
        if parameters.stopTokenIDs.contains(token) || (!parameters.ignoreEOS && eos.contains(token)) {
            return finish(.stop)
        }
        text += detokenizer?.append(token) ?? ""
        if let stop = parameters.stopStrings.compactMap({ text.firstRange(of: $0) }).min(by: { $0.lowerBound < $1.lowerBound }) {
            text = String(text[..<stop.lowerBound])
            finishReason = .stop
            return
        }
        if generated.count >= parameters.maxTokens || tokens.count >= contextLimit { finish(.length) }
    }

    /// Ends the sequence, releasing text the detokenizer held back for an unfinished character.
    private mutating func finish(_ reason: FinishReason) {
        text += detokenizer?.finish() ?? ""
        finishReason = reason
    }

    var result: GenerationResult {
        GenerationResult(id: request.id, tokenIDs: Array(generated), text: text,
                         logprobs: request.sampling.logprobs > 0 ? logprobs : nil, finishReason: finishReason ?? .length)
    }
}
