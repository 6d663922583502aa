import PunicaEngine
import PunicaTokenizer

/// What one endpoint makes of one choice's tokens: chunks while streaming, or its choice of the whole response at
/// the end. Both come from the same accumulated state, so a streamed response and a whole one always agree.
protocol ResponseBuilder {
    associatedtype Chunk: Encodable
    associatedtype Choice: Encodable
    associatedtype Whole: Encodable
    /// Sent before the choice's first token.
    func openingChunks() -> [Chunk]
    /// Records the prompt's logprobs (`.prompt`, before the first token); returns its chunk, if it shows any.
    mutating func appendPrompt(_ logprobs: [TokenLogprobs]) -> Chunk?
    /// Records one generated token; returns its chunk, or nil when it shows nothing yet (text held back, no logprobs).
    mutating func append(text: String, token: Int, logprob: TokenLogprob?, top: [TokenLogprob]) -> Chunk?
    /// The chunk with the finish reason.
    func closingChunk(finishReason: String) -> Chunk
    /// This choice in the whole response, at `index` (its own, unless `best_of` ranked the choices).
    func choice(index: Int, finishReason: String) -> Choice
    /// The last chunk of a stream when the client asked for usage: no choices.
    static func usageChunk(_ identity: ResponseIdentity, usage: Usage) -> Chunk
    static func whole(_ identity: ResponseIdentity, choices: [Choice], usage: Usage) -> Whole
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

/// `/v1/completions`: text and the legacy logprobs object; with `echo`, the prompt before them.
struct CompletionBuilder: ResponseBuilder {
    let identity: ResponseIdentity
    let index: Int
    /// The client's `logprobs` (nil: none).
    let topCount: Int?
    /// The prompt's text and token ids when the client asked for `echo`.
    let echo: (text: String, ids: [Int])?
    /// The client's `prompt_logprobs` (nil: none).
    let promptTopCount: Int?
    let tokens: TokenText
    private var text = ""
    private var logprobs = CompletionLogprobs()
    private var promptLogprobs: [[String: PromptLogprob]?]?
    /// Where the next token starts in the text of the tokens so far.
    private var textOffset = 0

    init(identity: ResponseIdentity, index: Int, topCount: Int?, echo: (text: String, ids: [Int])?, promptTopCount: Int?, tokens: TokenText) {
        self.identity = identity
        self.index = index
        self.topCount = topCount
        self.echo = echo
        self.promptTopCount = promptTopCount
        self.tokens = tokens
        // An echo is written with the prompt's logprobs when they come, else at once.
        if !wantsPromptLogprobs { text = echo?.text ?? "" }
    }

    /// Whether the prompt's logprobs come (as `.prompt`): for echoed logprobs or `prompt_logprobs`.
    var wantsPromptLogprobs: Bool { (echo != nil && topCount != nil) || promptTopCount != nil }

    func openingChunks() -> [CompletionObject] {
        guard let echo, !wantsPromptLogprobs else { return [] }
        return [chunk(.init(index: index, text: echo.text, logprobs: nil, finish_reason: nil))]
    }

    mutating func appendPrompt(_ scored: [TokenLogprobs]) -> CompletionObject? {
        if let promptTopCount {
            // vLLM's shape: null for the first token, then {id: {logprob, rank, decoded_token}} with the top ones.
            promptLogprobs = [nil] + scored.map { position in
                var entries: [String: PromptLogprob] = [:]
                for (rank, candidate) in position.top.prefix(promptTopCount).enumerated() {
                    entries[String(candidate.id)] = PromptLogprob(logprob: finite(candidate.logprob), rank: rank + 1, decoded_token: tokens.text(candidate.id))
                }
                let id = position.chosen.id
                entries[String(id)] = PromptLogprob(logprob: finite(position.chosen.logprob), rank: position.rank, decoded_token: tokens.text(id))
                return entries
            }
        }
        var entry: CompletionLogprobs?
        if let echo {
            if let topCount {
                // The first token has no logprob: null, as OpenAI writes it.
                var echoed = CompletionLogprobs()
                for (index, id) in echo.ids.enumerated() {
                    let position = index == 0 ? nil : scored[index - 1]
                    echoed.append(tokenEntry(id, logprob: position?.chosen, top: position.map { Array($0.top.prefix(topCount)) } ?? []))
                }
                logprobs.append(echoed)
                entry = echoed
            }
            text += echo.text
        }
        return chunk(.init(index: index, text: echo?.text ?? "", logprobs: entry, finish_reason: nil, prompt_logprobs: promptLogprobs))
    }

    mutating func append(text delta: String, token: Int, logprob: TokenLogprob?, top: [TokenLogprob]) -> CompletionObject? {
        text += delta
        var entry: CompletionLogprobs?
        if let topCount, let logprob {
            entry = tokenEntry(token, logprob: logprob, top: Array(top.prefix(topCount)))
            logprobs.append(entry!)
        }
        guard !delta.isEmpty || entry != nil else { return nil }
        return chunk(.init(index: index, text: delta, logprobs: entry, finish_reason: nil))
    }

    /// One token's parallel-list entry at the current text offset, which it advances; a nil logprob (the first
    /// prompt token's) writes nulls.
    private mutating func tokenEntry(_ token: Int, logprob: TokenLogprob?, top: [TokenLogprob]) -> CompletionLogprobs {
        let name = tokens.text(token)
        let alternatives = logprob.map { chosen in
            Dictionary((top + [chosen]).map { (tokens.text($0.id), finite($0.logprob)) }) { first, _ in first }
        }
        defer { textOffset += name.unicodeScalars.count }
        return CompletionLogprobs(tokens: [name], token_logprobs: [logprob.map { finite($0.logprob) }], top_logprobs: [alternatives],
                                  text_offset: [textOffset])
    }

    func closingChunk(finishReason: String) -> CompletionObject {
        chunk(.init(index: index, text: "", logprobs: nil, finish_reason: finishReason))
    }

    func choice(index: Int, finishReason: String) -> CompletionObject.Choice {
        .init(index: index, text: text, logprobs: topCount == nil ? nil : logprobs, finish_reason: finishReason, prompt_logprobs: promptLogprobs)
    }

    static func usageChunk(_ identity: ResponseIdentity, usage: Usage) -> CompletionObject {
        CompletionObject(id: identity.id, created: identity.created, model: identity.model, choices: [], usage: UsageBody(usage))
    }

    static func whole(_ identity: ResponseIdentity, choices: [CompletionObject.Choice], usage: Usage) -> CompletionObject {
        CompletionObject(id: identity.id, created: identity.created, model: identity.model, choices: choices, usage: UsageBody(usage))
    }

    private func chunk(_ choice: CompletionObject.Choice) -> CompletionObject {
        CompletionObject(id: identity.id, created: identity.created, model: identity.model, choices: [choice], usage: nil)
    }
}

/// `/v1/chat/completions`: the assistant's message and chat logprobs.
struct ChatBuilder: ResponseBuilder {
    let identity: ResponseIdentity
    let index: Int
    /// The client's `top_logprobs` when it set `logprobs` (nil: none).
    let topCount: Int?
    let tokens: TokenText
    private var text = ""
    private var logprobs = ChatLogprobs()

    init(identity: ResponseIdentity, index: Int, topCount: Int?, tokens: TokenText) {
        self.identity = identity
        self.index = index
        self.topCount = topCount
        self.tokens = tokens
    }

    func openingChunks() -> [ChatCompletionChunk] {
        [chunk(.init(index: index, delta: .init(role: "assistant", content: ""), logprobs: nil, finish_reason: nil))]
    }

    /// Chat requests never ask for the prompt's logprobs.
    func appendPrompt(_ logprobs: [TokenLogprobs]) -> ChatCompletionChunk? { nil }

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
        return chunk(.init(index: index, delta: .init(content: delta), logprobs: entry, finish_reason: nil))
    }

    func closingChunk(finishReason: String) -> ChatCompletionChunk {
        chunk(.init(index: index, delta: .init(), logprobs: nil, finish_reason: finishReason))
    }

    func choice(index: Int, finishReason: String) -> ChatCompletionObject.Choice {
        .init(index: index, message: .init(content: text), logprobs: topCount == nil ? nil : logprobs, finish_reason: finishReason)
    }

    static func usageChunk(_ identity: ResponseIdentity, usage: Usage) -> ChatCompletionChunk {
        ChatCompletionChunk(id: identity.id, created: identity.created, model: identity.model, choices: [], usage: UsageBody(usage))
    }

    static func whole(_ identity: ResponseIdentity, choices: [ChatCompletionObject.Choice], usage: Usage) -> ChatCompletionObject {
        ChatCompletionObject(id: identity.id, created: identity.created, model: identity.model, choices: choices, usage: UsageBody(usage))
    }

    private func chunk(_ choice: ChatCompletionChunk.Choice) -> ChatCompletionChunk {
        ChatCompletionChunk(id: identity.id, created: identity.created, model: identity.model, choices: [choice], usage: nil)
    }
}
