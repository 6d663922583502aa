import PunicaEngine

// Request bodies of the OpenAI API, with its field names. Unknown fields are ignored, as OpenAI-compatible servers do.

/// Fields both generation endpoints share: OpenAI's, plus vLLM's `top_k` and `ignore_eos`.
struct GenerationOptions: Decodable {
    var model: String
    var max_tokens: Int?
    var max_completion_tokens: Int?
    var temperature: Float?
    var top_p: Float?
    var top_k: Int?
    var seed: Int64?
    var stop: StringOrList?
    var n: Int?
    var stream: Bool?
    var stream_options: StreamOptions?
    var ignore_eos: Bool?

    struct StreamOptions: Decodable {
        var include_usage: Bool?
    }

    var streams: Bool { stream ?? false }
    var includesUsage: Bool { stream_options?.include_usage ?? false }

    /// The engine's sampling parameters. `maxTokens` depends on the prompt, `logprobs` on the endpoint's own fields.
    func sampling(maxTokens: Int, logprobs: Int) throws(APIError) -> SamplingParameters {
        if let n, n != 1 { throw .invalid(param: "n", message: "`n` must be 1 (one choice per request). Given: \(n)") }
        if stream_options != nil && !streams {
            throw .invalid(param: "stream_options", message: "`stream_options` is only allowed with `stream`: true")
        }
        var sampling = SamplingParameters()
        sampling.maxTokens = maxTokens
        sampling.temperature = temperature ?? sampling.temperature
        sampling.topP = top_p ?? sampling.topP
        sampling.topK = top_k ?? sampling.topK
        sampling.seed = seed.map { UInt64(bitPattern: $0) }
        sampling.stopStrings = stop?.values ?? []
        sampling.logprobs = logprobs
        sampling.ignoreEOS = ignore_eos ?? false
        return sampling
    }

    /// Tokens to generate: `max_completion_tokens`, else `max_tokens`, else `defaultTokens` (nil: as many as fit),
    /// within `--max-tokens-limit` and what the context leaves after the prompt.
    func maxTokens(promptTokens: Int, promptField: String, defaultTokens: Int?, limit: Int, context: Int) throws(APIError) -> Int {
        let room = context - promptTokens
        guard room >= 1 else {
            throw .invalid(param: promptField, message: "`\(promptField)` has \(promptTokens) tokens; the model's context holds \(context) (prompt plus output)")
        }
        let (field, requested) = max_completion_tokens.map { ("max_completion_tokens", $0) } ?? ("max_tokens", max_tokens)
        guard let requested else { return min(defaultTokens ?? limit, limit, room) }
        if requested > limit { throw .invalid(param: field, message: "`\(field)` must be <= \(limit). Given: \(requested)") }
        if requested > room {
            throw .invalid(param: field, message: "This model's context holds \(context) tokens: the prompt has \(promptTokens), "
                           + "so `\(field)` must be <= \(room). Given: \(requested)")
        }
        return requested
    }
}

/// `POST /v1/completions`
struct CompletionRequest: Decodable {
    var options: GenerationOptions
    var prompt: StringOrList
    /// How many most likely tokens to report per generated token (OpenAI's legacy logprobs).
    var logprobs: Int?

    private enum CodingKeys: String, CodingKey { case prompt, logprobs }

    init(from decoder: any Decoder) throws {
        options = try GenerationOptions(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        prompt = try container.decode(StringOrList.self, forKey: .prompt)
        logprobs = try container.decodeIfPresent(Int.self, forKey: .logprobs)
    }

    /// The one prompt: a string, or a list holding one string.
    func promptText() throws(APIError) -> String {
        guard prompt.values.count == 1 else {
            throw .invalid(param: "prompt", message: "`prompt` must be a string or a list of one string (send one request per prompt). "
                           + "Given: a list of \(prompt.values.count)")
        }
        return prompt.values[0]
    }
}

/// `POST /v1/chat/completions`
struct ChatCompletionRequest: Decodable {
    var options: GenerationOptions
    var messages: [Message]
    var logprobs: Bool?
    var top_logprobs: Int?

    struct Message: Decodable {
        var role: String
        var content: Content
    }

    /// A message's text: a string, or a list of text parts (joined).
    struct Content: Decodable {
        var text: String

        private struct Part: Decodable {
            var type: String
            var text: String?
        }

        init(from decoder: any Decoder) throws {
            if let text = try? decoder.singleValueContainer().decode(String.self) {
                self.text = text
                return
            }
            guard let parts = try? decoder.singleValueContainer().decode([Part].self) else {
                throw FieldRule.error("must be a string or a list of text parts", decoder)
            }
            if let other = parts.first(where: { $0.type != "text" || $0.text == nil }) {
                throw FieldRule.error("must hold only text parts ({\"type\": \"text\", \"text\": …}). Given type: \(other.type)", decoder)
            }
            text = parts.compactMap(\.text).joined()
        }
    }

    private enum CodingKeys: String, CodingKey { case messages, logprobs, top_logprobs }

    init(from decoder: any Decoder) throws {
        options = try GenerationOptions(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        messages = try container.decode([Message].self, forKey: .messages)
        logprobs = try container.decodeIfPresent(Bool.self, forKey: .logprobs)
        top_logprobs = try container.decodeIfPresent(Int.self, forKey: .top_logprobs)
    }

    static let roles: Set = ["system", "user", "assistant"]

    func chatMessages() throws(APIError) -> [ChatMessage] {
        guard !messages.isEmpty else { throw .invalid(param: "messages", message: "`messages` must hold at least one message") }
        for (index, message) in messages.enumerated() where !Self.roles.contains(message.role) {
            throw .invalid(param: "messages[\(index)].role",
                           message: "`messages[\(index)].role` must be system, user or assistant. Given: \(message.role)")
        }
        return messages.map { ChatMessage(role: $0.role, content: $0.content.text) }
    }

    /// The engine's logprobs count: `top_logprobs` when `logprobs` is true.
    func logprobsCount() throws(APIError) -> Int {
        guard logprobs == true else {
            if top_logprobs != nil { throw .invalid(param: "top_logprobs", message: "`top_logprobs` requires `logprobs`: true") }
            return 0
        }
        return try engineLogprobs(top_logprobs ?? 0, field: "top_logprobs")
    }
}

/// How many top tokens the engine reports for a client asking for `count` (0...20): at least one, since the
/// engine reports the chosen token's logprob only along with the top ones.
func engineLogprobs(_ count: Int, field: String) throws(APIError) -> Int {
    guard (0...SamplingParameters.maxLogprobs).contains(count) else {
        throw .invalid(param: field, message: "`\(field)` must be >= 0 and <= \(SamplingParameters.maxLogprobs). Given: \(count)")
    }
    return max(count, 1)
}

/// `POST /v1/load_lora_adapter` (vLLM's shape)
struct LoadAdapterRequest: Decodable {
    var lora_name: String
    var lora_path: String
    /// Sent by rollout controllers; when present it must be the served model's name.
    var base_model_name: String?
}

/// `POST /v1/unload_lora_adapter`
struct UnloadAdapterRequest: Decodable {
    var lora_name: String
}

/// A field that is one string or a list of them, as `stop` and `prompt` are.
struct StringOrList: Decodable {
    var values: [String]

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(String.self) {
            values = [value]
        } else if let list = try? container.decode([String].self) {
            values = list
        } else {
            throw FieldRule.error("must be a string or a list of strings", decoder)
        }
    }
}
