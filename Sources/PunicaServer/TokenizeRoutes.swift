#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import PunicaEngine

// vLLM's `/tokenize`, `/detokenize` and `/tokenizer_info`, so clients can count tokens as the server does (lm-eval's
// `local-completions` tokenizes through them when /tokenizer_info answers, needing no tokenizer of its own).

/// `POST /tokenize`: `prompt` (a completion's text) or `messages` (rendered by the chat template, as chat requests are).
struct TokenizeRequest: Decodable {
    var model: String?
    var prompt: String?
    /// Rendered from the body's JSON as chat requests are (`ChatCompletionRequest.templateInput`); here only whether
    /// they were sent.
    var messages: [Ignored]?
    /// Default true for `prompt` (as completions encode it), false for `messages` (the template writes them).
    var add_special_tokens: Bool?
    var add_generation_prompt: Bool?
    var return_token_strs: Bool?
}

/// Any JSON value, not kept.
struct Ignored: Decodable {
    init(from decoder: any Decoder) throws {}
}

struct TokenizeResponse: Encodable {
    let count: Int
    let max_model_len: Int
    let tokens: [Int]
    @EncodedAsNull var token_strs: [String]?
}

/// `POST /detokenize`
struct DetokenizeRequest: Decodable {
    var model: String?
    var tokens: [Int]
}

struct DetokenizeResponse: Encodable {
    let prompt: String
}

/// `GET /tokenizer_info`: what of tokenizer_config.json the server uses (vLLM returns the whole of it).
struct TokenizerInfoResponse: Encodable {
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token`… as their texts, only those the model has.
    let specialTokens: [String: String]
    /// The longest context the server takes (prompt and generated tokens).
    let model_max_length: Int
    /// The default chat template's source, when the model has one.
    let chat_template: String?

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: AnyKey.self)
        for (name, text) in specialTokens { try container.encode(text, forKey: AnyKey(stringValue: name)) }
        try container.encode(model_max_length, forKey: AnyKey(stringValue: "model_max_length"))
        try container.encodeIfPresent(chat_template, forKey: AnyKey(stringValue: "chat_template"))
    }
}

extension OpenAIServer {
    func tokenizerInfo() -> Response {
        jsonResponse(TokenizerInfoResponse(specialTokens: specialTokens, model_max_length: service.maxContextLength,
                                           chat_template: service.tokenizer.chatTemplates["default"]))
    }

    func tokenize(_ request: Request) async throws -> Response {
        var request = request
        let data = try await bodyData(from: &request)
        let body = try JSONDecoder().decode(TokenizeRequest.self, from: data)
        try checkModel(body.model)
        let ids: [Int]
        switch (body.prompt, body.messages) {
        case let (prompt?, nil):
            ids = service.tokenizer.encode(prompt, addSpecialTokens: body.add_special_tokens ?? true)
        case (nil, _?):
            let json: JinjaValue
            do { json = try OrderedJSON.parse(data) } catch { throw APIError.invalid(param: nil, message: "The request body is not valid JSON: \(error)") }
            let input = try ChatCompletionRequest.templateInput(json: json, addGenerationPrompt: body.add_generation_prompt ?? true)
            let rendered = try chatTemplate.get().render(input)
            ids = service.tokenizer.encode(rendered, addSpecialTokens: body.add_special_tokens ?? false)
        default:
            throw APIError.invalid(param: "prompt", message: "exactly one of `prompt` and `messages` must be given")
        }
        let tokens = TokenText(tokenizer: service.tokenizer)
        return jsonResponse(TokenizeResponse(count: ids.count, max_model_len: service.maxContextLength, tokens: ids,
                                             token_strs: body.return_token_strs == true ? ids.map(tokens.text) : nil))
    }

    func detokenize(_ request: Request) async throws -> Response {
        var request = request
        let body = try await decodeBody(DetokenizeRequest.self, from: &request)
        try checkModel(body.model)
        let vocabulary = service.tokenizer.vocabularySize
        if let bad = body.tokens.first(where: { !(0..<vocabulary).contains($0) }) {
            throw APIError.invalid(param: "tokens", message: "`tokens` must be ids in 0..<\(vocabulary). Given: \(bad)")
        }
        return jsonResponse(DetokenizeResponse(prompt: service.tokenizer.decode(body.tokens, skipSpecialTokens: false)))
    }

    /// `model`, when given, must be the base model or a registered adapter (they share the tokenizer).
    private func checkModel(_ model: String?) throws(APIError) {
        guard let model, model != configuration.servedModelName else { return }
        guard service.adapterNames().contains(model) else { throw .modelNotFound(model) }
    }
}
