import PunicaEngine
import PunicaTokenizer

/// What one endpoint makes of a generation's tokens: chunks while streaming, or one object at the end. Both come from
/// the same accumulated state, so a streamed response and a whole one always agree.
protocol ResponseBuilder {
    associatedtype Chunk: Encodable
    associatedtype Whole: Encodable
    /// Sent before the first token.
    func openingChunks() -> [Chunk]
    /// Records one generated token; returns its chunk, or nil when it shows nothing yet (text held back, no logprobs).
    mutating func append(text: String, token: Int, logprob: TokenLogprob?, top: [TokenLogprob]) -> Chunk?
    /// The chunk with the finish reason, then the usage chunk when the client asked for it.
    func closingChunks(finishReason: String, usage: Usage) -> [Chunk]
    func whole(finishReason: String, usage: Usage) -> Whole
}

/// What every chunk of one response repeats.
struct ResponseIdentity: Sendable {
    let id: String
    let created: Int
    let model: String
    /// `stream_options.include_usage`: a last chunk with the usage and no choices.
    let includeUsage: Bool
}

/// A token's own text, as logprobs and chat templates show it (special tokens included).
struct TokenText {
    let tokenizer: Tokenizer

    func text(_ id: Int) -> String { tokenizer.decode([id], skipSpecialTokens: false) }
}

/// JSON has no -inf: OpenAI-compatible servers write -9999.
private func finite(_ logprob: Float) -> Float { logprob.isFinite ? logprob : -9999 }

/// `/v1/completions`: text and the legacy logprobs object.
struct CompletionBuilder: ResponseBuilder {
    let identity: ResponseIdentity
    /// The client's `logprobs` (nil: none).
    let topCount: Int?
    let tokens: TokenText
    private var text = ""
    private var logprobs = CompletionLogprobs()
    /// Where the next token starts in the text of the tokens so far.
    private var textOffset = 0

    init(identity: ResponseIdentity, topCount: Int?, tokens: TokenText) {
        self.identity = identity
        self.topCount = topCount
        self.tokens = tokens
    }

    func openingChunks() -> [CompletionObject] { [] }

    mutating func append(text delta: String, token: Int, logprob: TokenLogprob?, top: [TokenLogprob]) -> CompletionObject? {
        text += delta
        var entry: CompletionLogprobs?
        if let topCount, let logprob {
            let name = tokens.text(token)
            let alternatives = (top.prefix(topCount) + [logprob]).map { (tokens.text($0.id), finite($0.logprob)) }
            let tokenEntry = CompletionLogprobs(tokens: [name], token_logprobs: [finite(logprob.logprob)],
                                                top_logprobs: [Dictionary(alternatives) { first, _ in first }], text_offset: [textOffset])
            textOffset += name.unicodeScalars.count
            logprobs.append(tokenEntry)
            entry = tokenEntry
        }
        guard !delta.isEmpty || entry != nil else { return nil }
        return chunk(CompletionObject.Choice(text: delta, logprobs: entry, finish_reason: nil))
    }

    func closingChunks(finishReason: String, usage: Usage) -> [CompletionObject] {
        [chunk(CompletionObject.Choice(text: "", logprobs: nil, finish_reason: finishReason))]
            + (identity.includeUsage ? [CompletionObject(id: identity.id, created: identity.created, model: identity.model, choices: [], usage: UsageBody(usage))] : [])
    }

    func whole(finishReason: String, usage: Usage) -> CompletionObject {
        CompletionObject(id: identity.id, created: identity.created, model: identity.model,
                         choices: [.init(text: text, logprobs: topCount == nil ? nil : logprobs, finish_reason: finishReason)],
                         usage: UsageBody(usage))
    }

    private func chunk(_ choice: CompletionObject.Choice) -> CompletionObject {
        CompletionObject(id: identity.id, created: identity.created, model: identity.model, choices: [choice], usage: nil)
    }
}

/// `/v1/chat/completions`: the assistant's message and chat logprobs.
struct ChatBuilder: ResponseBuilder {
    let identity: ResponseIdentity
    /// The client's `top_logprobs` when it set `logprobs` (nil: none).
    let topCount: Int?
    let tokens: TokenText
    private var text = ""
    private var logprobs = ChatLogprobs()

    init(identity: ResponseIdentity, topCount: Int?, tokens: TokenText) {
        self.identity = identity
        self.topCount = topCount
        self.tokens = tokens
    }

    func openingChunks() -> [ChatCompletionChunk] {
        [chunk(.init(delta: .init(role: "assistant", content: ""), logprobs: nil, finish_reason: nil))]
    }

    mutating func append(text delta: String, token: Int, logprob: TokenLogprob?, top: [TokenLogprob]) -> ChatCompletionChunk? {
        text += delta
        var entry: ChatLogprobs?
        if let topCount, let logprob {
            func alternative(_ candidate: TokenLogprob) -> ChatLogprobs.Alternative {
                let name = tokens.text(candidate.id)
                return .init(token: name, logprob: finite(candidate.logprob), bytes: Array(name.utf8))
            }
            let chosen = alternative(logprob)
            let token = ChatLogprobs.Token(token: chosen.token, logprob: chosen.logprob, bytes: chosen.bytes,
                                           top_logprobs: top.prefix(topCount).map(alternative))
            logprobs.content.append(token)
            entry = ChatLogprobs(content: [token])
        }
        guard !delta.isEmpty || entry != nil else { return nil }
        return chunk(.init(delta: .init(content: delta), logprobs: entry, finish_reason: nil))
    }

    func closingChunks(finishReason: String, usage: Usage) -> [ChatCompletionChunk] {
        [chunk(.init(delta: .init(), logprobs: nil, finish_reason: finishReason))]
            + (identity.includeUsage ? [ChatCompletionChunk(id: identity.id, created: identity.created, model: identity.model, choices: [], usage: UsageBody(usage))] : [])
    }

    func whole(finishReason: String, usage: Usage) -> ChatCompletionObject {
        ChatCompletionObject(id: identity.id, created: identity.created, model: identity.model,
                             choices: [.init(message: .init(content: text), logprobs: topCount == nil ? nil : logprobs, finish_reason: finishReason)],
                             usage: UsageBody(usage))
    }

    private func chunk(_ choice: ChatCompletionChunk.Choice) -> ChatCompletionChunk {
        ChatCompletionChunk(id: identity.id, created: identity.created, model: identity.model, choices: [choice], usage: nil)
    }
}
