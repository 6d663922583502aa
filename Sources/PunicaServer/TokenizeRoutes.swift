import Hummingbird
import PunicaEngine

// vLLM's `/tokenize` and `/detokenize`, so clients can count tokens as the server does.

/// `POST /tokenize`: `prompt` (a completion's text) or `messages` (rendered by the chat template, as chat requests are).
struct TokenizeRequest: Decodable {
    var model: String?
    var prompt: String?
    var messages: [ChatCompletionRequest.Message]?
    /// Default true for `prompt` (as completions encode it), false for `messages` (the template writes them).
    var add_special_tokens: Bool?
    var add_generation_prompt: Bool?
    var return_token_strs: Bool?
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

extension OpenAIServer {
    func tokenize(_ request: Request) async throws -> Response {
        var request = request
        let body = try await decodeBody(TokenizeRequest.self, from: &request)
        try checkModel(body.model)
        let ids: [Int]
        switch (body.prompt, body.messages) {
        case let (prompt?, nil):
            ids = service.tokenizer.encode(prompt, addSpecialTokens: body.add_special_tokens ?? true)
        case let (nil, messages?):
            // The chat template always ends with the assistant's turn opened, as chat requests render it.
            if body.add_generation_prompt == false {
                throw APIError.invalid(param: "add_generation_prompt", message: "`add_generation_prompt`: false is not supported")
            }
            let rendered = try chatTemplate.get().render(try ChatCompletionRequest.chatMessages(messages))
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
