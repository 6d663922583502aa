#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaEngine

// Request bodies of the OpenAI API, with its field names. Fields that change what is generated and that punica does
// not implement are refused (`GenerationOptions.unsupported`); other unknown fields (`user`, `metadata`, `store`,
// `service_tier`, `priority`, other servers' extensions) are ignored, as OpenAI-compatible servers do.

/// Fields both generation endpoints share: OpenAI's, plus vLLM's sampling extensions.
struct GenerationOptions: Decodable {
    var model: String
    var max_tokens: Int?
    var max_completion_tokens: Int?
    var temperature: Float?
    var top_p: Float?
    var top_k: Int?
    var min_p: Float?
    var seed: Int64?
    var stop: StringOrList?
    var stop_token_ids: [Int]?
    var n: Int?
    var stream: Bool?
    var stream_options: StreamOptions?
    var ignore_eos: Bool?
    var presence_penalty: Float?
    var frequency_penalty: Float?
    var repetition_penalty: Float?
    /// Token id (a string, as JSON keys are) → bias.
    var logit_bias: [String: Float]?
    var min_tokens: Int?
    var skip_special_tokens: Bool?

    /// vLLM and OpenAI fields that would change the output and that punica does not implement: refused when set
    /// (to anything but null or false; `response_format` to anything but `{"type": "text"}`) rather than ignored.
    static let unsupported = ["use_beam_search", "length_penalty", "early_stopping", "include_stop_str_in_output", "bad_words",
                              "allowed_token_ids", "logits_processors", "truncate_prompt_tokens", "guided_json", "guided_regex",
                              "guided_choice", "guided_grammar", "structured_outputs", "response_format", "prompt_embeds",
                              "spaces_between_special_tokens", "audio", "modalities", "prediction"]

    private struct TextFormat: Decodable {
        let type: String
    }

    private enum CodingKeys: String, CodingKey {
        case model, max_tokens, max_completion_tokens, temperature, top_p, top_k, min_p, seed, stop, stop_token_ids, n, stream,
             stream_options, ignore_eos, presence_penalty, frequency_penalty, repetition_penalty, logit_bias, min_tokens,
             skip_special_tokens
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        model = try container.decode(String.self, forKey: .model)
        max_tokens = try container.decodeIfPresent(Int.self, forKey: .max_tokens)
        max_completion_tokens = try container.decodeIfPresent(Int.self, forKey: .max_completion_tokens)
        temperature = try container.decodeIfPresent(Float.self, forKey: .temperature)
        top_p = try container.decodeIfPresent(Float.self, forKey: .top_p)
        top_k = try container.decodeIfPresent(Int.self, forKey: .top_k)
        min_p = try container.decodeIfPresent(Float.self, forKey: .min_p)
        seed = try container.decodeIfPresent(Int64.self, forKey: .seed)
        stop = try container.decodeIfPresent(StringOrList.self, forKey: .stop)
        stop_token_ids = try container.decodeIfPresent([Int].self, forKey: .stop_token_ids)
        n = try container.decodeIfPresent(Int.self, forKey: .n)
        stream = try container.decodeIfPresent(Bool.self, forKey: .stream)
        stream_options = try container.decodeIfPresent(StreamOptions.self, forKey: .stream_options)
        ignore_eos = try container.decodeIfPresent(Bool.self, forKey: .ignore_eos)
        presence_penalty = try container.decodeIfPresent(Float.self, forKey: .presence_penalty)
        frequency_penalty = try container.decodeIfPresent(Float.self, forKey: .frequency_penalty)
        repetition_penalty = try container.decodeIfPresent(Float.self, forKey: .repetition_penalty)
        logit_bias = try container.decodeIfPresent([String: Float].self, forKey: .logit_bias)
        min_tokens = try container.decodeIfPresent(Int.self, forKey: .min_tokens)
        skip_special_tokens = try container.decodeIfPresent(Bool.self, forKey: .skip_special_tokens)
        let all = try decoder.container(keyedBy: AnyKey.self)
        for name in Self.unsupported {
            let key = AnyKey(stringValue: name)
            guard all.contains(key), try !all.decodeNil(forKey: key), (try? all.decode(Bool.self, forKey: key)) != false,
                  (try? all.decode(TextFormat.self, forKey: key))?.type != "text" else { continue }
            throw APIError.invalid(param: name, message: "`\(name)` is not supported by punica")
        }
    }

    struct StreamOptions: Decodable {
        var include_usage: Bool?
    }

    var streams: Bool { stream ?? false }
    var includesUsage: Bool { stream_options?.include_usage ?? false }

    /// The most choices (`n`) one request may ask for per prompt.
    static let maxChoices = 16

    /// `n`: choices per prompt, each its own engine request submitted with the others.
    func choiceCount() throws(APIError) -> Int {
        let n = n ?? 1
        guard (1...Self.maxChoices).contains(n) else {
            throw .invalid(param: "n", message: "`n` must be >= 1 and <= \(Self.maxChoices). Given: \(n)")
        }
        return n
    }

    /// The engine's sampling parameters. `maxTokens` depends on the prompt, `logprobs` on the endpoint's own fields.
    func sampling(maxTokens: Int, logprobs: Int) throws(APIError) -> SamplingParameters {
        if stream_options != nil && !streams {
            throw .invalid(param: "stream_options", message: "`stream_options` is only allowed with `stream`: true")
        }
        var sampling = SamplingParameters()
        sampling.maxTokens = maxTokens
        sampling.temperature = temperature ?? sampling.temperature
        sampling.topP = top_p ?? sampling.topP
        sampling.topK = top_k ?? sampling.topK
        sampling.minP = min_p ?? sampling.minP
        sampling.seed = seed.map { UInt64(bitPattern: $0) }
        sampling.stopStrings = stop?.values ?? []
        sampling.stopTokenIDs = stop_token_ids ?? []
        sampling.logprobs = logprobs
        sampling.ignoreEOS = ignore_eos ?? false
        sampling.presencePenalty = presence_penalty ?? 0
        sampling.frequencyPenalty = frequency_penalty ?? 0
        sampling.repetitionPenalty = repetition_penalty ?? 1
        sampling.minTokens = min_tokens ?? 0
        sampling.skipSpecialTokens = skip_special_tokens ?? true
        for (key, bias) in logit_bias ?? [:] {
            guard let token = Int(key) else {
                throw .invalid(param: "logit_bias", message: "`logit_bias` keys must be token ids. Given: \(key.debugDescription)")
            }
            sampling.logitBias[token] = bias
        }
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
    var prompts: [Prompt]
    /// How many most likely tokens to report per token (OpenAI's legacy logprobs); with `echo`, the prompt's too.
    var logprobs: Int?
    /// The prompt written before the completion in `text` (and its tokens in `logprobs`).
    var echo: Bool
    /// vLLM's: the prompt's tokens scored, with this many most likely tokens each.
    var prompt_logprobs: Int?
    var best_of: Int?
    var suffix: String?

    /// One prompt: text, or token ids as given (lm-evaluation-harness sends those).
    enum Prompt: Equatable {
        case text(String)
        case tokens([Int])
    }

    private enum CodingKeys: String, CodingKey { case prompt, logprobs, echo, prompt_logprobs, best_of, suffix }

    init(from decoder: any Decoder) throws {
        options = try GenerationOptions(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        prompts = try container.decode(PromptList.self, forKey: .prompt).prompts
        logprobs = try container.decodeIfPresent(Int.self, forKey: .logprobs)
        echo = try container.decodeIfPresent(Bool.self, forKey: .echo) ?? false
        prompt_logprobs = try container.decodeIfPresent(Int.self, forKey: .prompt_logprobs)
        best_of = try container.decodeIfPresent(Int.self, forKey: .best_of)
        suffix = try container.decodeIfPresent(String.self, forKey: .suffix)
    }

    /// Choices per prompt: `n` returned of `bestOf` generated (the most likely by their tokens' summed logprobs, as
    /// OpenAI's legacy `best_of` and vLLM rank them); refuses `suffix`.
    func choicesPerPrompt() throws(APIError) -> (n: Int, bestOf: Int) {
        if let suffix, !suffix.isEmpty {
            throw .invalid(param: "suffix", message: "`suffix` is not supported (punica does not insert text)")
        }
        let n = try options.choiceCount()
        let bestOf = best_of ?? n
        guard (n...GenerationOptions.maxChoices).contains(bestOf) else {
            throw .invalid(param: "best_of", message: "`best_of` must be >= `n` (\(n)) and <= \(GenerationOptions.maxChoices). Given: \(bestOf)")
        }
        if bestOf > n && options.streams {
            throw .invalid(param: "best_of", message: "`best_of` > `n` cannot be streamed (the choices are ranked once all are done)")
        }
        return (n, bestOf)
    }

    /// A `prompt`: a string, a list of strings, a list of token ids, or a list of token-id lists.
    private struct PromptList: Decodable {
        var prompts: [Prompt]

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self) {
                prompts = [.text(text)]
            } else if let texts = try? container.decode([String].self) {
                prompts = texts.map(Prompt.text)
            } else if let ids = try? container.decode([Int].self) {
                prompts = [.tokens(ids)]
            } else if let lists = try? container.decode([[Int]].self) {
                prompts = lists.map(Prompt.tokens)
            } else {
                throw FieldRule.error("must be a string, a list of strings, a list of token ids or a list of token-id lists", decoder)
            }
            if prompts.isEmpty { throw FieldRule.error("must hold at least one prompt", decoder) }
        }
    }
}

/// `POST /v1/chat/completions`. `messages` and `tools` are read from the body's JSON as sent (key order kept:
/// templates print tool schemas with `tojson`) by `templateInput(body:)`.
struct ChatCompletionRequest: Decodable {
    var options: GenerationOptions
    var logprobs: Bool?
    var top_logprobs: Int?
    /// vLLM's extensions: the template's `add_generation_prompt` (default true) and extra template variables.
    var add_generation_prompt: Bool?
    var continue_final_message: Bool?
    var tool_choice: ToolChoice?

    /// `tool_choice`: "none" and "auto" render the tools into the prompt and let the model answer; anything that
    /// would force a tool call needs constrained decoding, which punica does not do.
    enum ToolChoice: Decodable {
        case none, auto, forced(String)

        init(from decoder: any Decoder) throws {
            guard let text = try? decoder.singleValueContainer().decode(String.self) else {
                self = .forced("a named function")
                return
            }
            self = text == "none" ? .none : text == "auto" ? .auto : .forced("\"\(text)\"")
        }
    }

    private enum CodingKeys: String, CodingKey { case logprobs, top_logprobs, add_generation_prompt, continue_final_message, tool_choice }

    init(from decoder: any Decoder) throws {
        options = try GenerationOptions(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        logprobs = try container.decodeIfPresent(Bool.self, forKey: .logprobs)
        top_logprobs = try container.decodeIfPresent(Int.self, forKey: .top_logprobs)
        add_generation_prompt = try container.decodeIfPresent(Bool.self, forKey: .add_generation_prompt)
        continue_final_message = try container.decodeIfPresent(Bool.self, forKey: .continue_final_message)
        tool_choice = try container.decodeIfPresent(ToolChoice.self, forKey: .tool_choice)
    }

    /// What the chat template renders, from the body's JSON: the messages as sent, except that a list of text parts
    /// becomes its joined text (templates written for string content would fail on a list) and a tool call's
    /// `arguments` JSON string becomes the object it holds (templates print it with `tojson`, as vLLM passes it).
    func templateInput(body: JinjaValue) throws(APIError) -> ChatTemplateInput {
        if continue_final_message == true {
            throw .invalid(param: "continue_final_message", message: "`continue_final_message` is not supported; send the conversation to continue as a prompt to /v1/completions")
        }
        if case .forced(let choice)? = tool_choice {
            throw .invalid(param: "tool_choice", message: "`tool_choice` \(choice) is not supported (punica does not constrain output to a tool call); use \"auto\" or \"none\"")
        }
        return try Self.templateInput(json: body, addGenerationPrompt: add_generation_prompt ?? true)
    }

    /// The template input of a request body holding `messages` (and optionally `tools`, `chat_template_kwargs`): what
    /// chat requests and `/tokenize` render.
    static func templateInput(json body: JinjaValue, addGenerationPrompt: Bool) throws(APIError) -> ChatTemplateInput {
        guard case .dict(let fields) = body else { throw .invalid(param: nil, message: "The request body must be a JSON object") }
        guard case .list(let messages)? = fields["messages"], !messages.isEmpty else {
            throw .invalid(param: "messages", message: "`messages` must be a list holding at least one message")
        }
        var input = ChatTemplateInput(messages: try messages.enumerated().map { (index, message) throws(APIError) in try Self.message(message, index) })
        switch fields["tools"] {
        case nil, .none?: break
        case .list(let tools)? where tools.allSatisfy({ if case .dict = $0 { true } else { false } }): input.tools = tools
        default: throw .invalid(param: "tools", message: "`tools` must be a list of tool objects ({\"type\": \"function\", \"function\": {…}})")
        }
        input.addGenerationPrompt = addGenerationPrompt
        switch fields["chat_template_kwargs"] {
        case nil, .none?: break
        case .dict(let extra)?:
            for entry in extra.entries {
                guard case .string(let name) = entry.key else { continue }
                input.extra[name] = entry.value
            }
        default: throw .invalid(param: "chat_template_kwargs", message: "`chat_template_kwargs` must be an object")
        }
        return input
    }

    private static func message(_ value: JinjaValue, _ index: Int) throws(APIError) -> JinjaValue {
        let field = "messages[\(index)]"
        guard case .dict(var message) = value else { throw .invalid(param: field, message: "`\(field)` must be an object") }
        guard case .string? = message["role"] else { throw .invalid(param: "\(field).role", message: "`\(field).role` must be a string") }
        switch message["content"] {
        case .string?, .none?: break
        case nil:
            if message["tool_calls"] == nil { throw .invalid(param: "\(field).content", message: "`\(field).content` is required") }
        case .list(let parts)?:
            var text = ""
            for part in parts {
                guard case .dict(let part) = part, case .string("text")? = part["type"], case .string(let partText)? = part["text"] else {
                    let type = if case .dict(let part) = part, let type = part["type"] { type.text } else { "none" }
                    throw .invalid(param: "\(field).content", message: "`\(field).content` must hold only text parts ({\"type\": \"text\", \"text\": …}). Given type: \(type)")
                }
                text += partText
            }
            message["content"] = .string(text)
        default:
            throw .invalid(param: "\(field).content", message: "`\(field).content` must be a string or a list of text parts")
        }
        if case .list(var calls)? = message["tool_calls"] {
            for (callIndex, call) in calls.enumerated() {
                guard case .dict(var call) = call, case .dict(var function)? = call["function"],
                      case .string(let arguments)? = function["arguments"],
                      let parsed = try? OrderedJSON.parse(Data(arguments.utf8)) else { continue }
                function["arguments"] = parsed
                call["function"] = .dict(function)
                calls[callIndex] = .dict(call)
            }
            message["tool_calls"] = .list(calls)
        }
        return .dict(message)
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

/// A JSON object's key by its name, for objects whose keys are not fixed.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
