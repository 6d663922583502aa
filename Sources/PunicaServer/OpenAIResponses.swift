#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import PunicaEngine

// Response bodies of the OpenAI API, with its field names. OpenAI writes absent values of these fields as null.

/// An optional field written as `null` when absent (synthesized Encodable would leave it out).
@propertyWrapper
struct EncodedAsNull<Value: Encodable>: Encodable {
    var wrappedValue: Value?

    init(wrappedValue: Value?) {
        self.wrappedValue = wrappedValue
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let wrappedValue { try container.encode(wrappedValue) } else { try container.encodeNil() }
    }
}

struct UsageBody: Encodable {
    let prompt_tokens: Int
    let completion_tokens: Int
    let total_tokens: Int

    init(_ usage: Usage) {
        prompt_tokens = usage.promptTokens
        completion_tokens = usage.completionTokens
        total_tokens = usage.promptTokens + usage.completionTokens
    }
}

/// A `text_completion`: the whole response, or one chunk of a stream.
struct CompletionObject: Encodable {
    let id: String
    let object = "text_completion"
    let created: Int
    let model: String
    let choices: [Choice]
    @EncodedAsNull var usage: UsageBody?

    struct Choice: Encodable {
        let index: Int
        let text: String
        @EncodedAsNull var logprobs: CompletionLogprobs?
        @EncodedAsNull var finish_reason: String?
        /// vLLM's, only when asked for: null for the first prompt token, then the token and the top ones by id.
        var prompt_logprobs: [[String: PromptLogprob]?]? = nil
    }
}

/// One token of vLLM's `prompt_logprobs`.
struct PromptLogprob: Encodable {
    let logprob: Float
    let rank: Int
    let decoded_token: String
}

/// The legacy completions logprobs: parallel lists, one entry per token; an echoed prompt's first token has null
/// logprobs.
struct CompletionLogprobs: Encodable {
    var tokens: [String] = []
    var token_logprobs: [Float?] = []
    var top_logprobs: [[String: Float]?] = []
    var text_offset: [Int] = []

    mutating func append(_ other: CompletionLogprobs) {
        tokens += other.tokens
        token_logprobs += other.token_logprobs
        top_logprobs += other.top_logprobs
        text_offset += other.text_offset
    }
}

/// A `chat.completion` (not streaming).
struct ChatCompletionObject: Encodable {
    let id: String
    let object = "chat.completion"
    let created: Int
    let model: String
    let choices: [Choice]
    let usage: UsageBody

    struct Choice: Encodable {
        let index: Int
        let message: Message
        @EncodedAsNull var logprobs: ChatLogprobs?
        let finish_reason: String
    }

    struct Message: Encodable {
        let role = "assistant"
        let content: String
    }
}

/// A `chat.completion.chunk` of a stream.
struct ChatCompletionChunk: Encodable {
    let id: String
    let object = "chat.completion.chunk"
    let created: Int
    let model: String
    let choices: [Choice]
    @EncodedAsNull var usage: UsageBody?

    struct Choice: Encodable {
        let index: Int
        let delta: Delta
        @EncodedAsNull var logprobs: ChatLogprobs?
        @EncodedAsNull var finish_reason: String?
    }

    /// What this chunk adds; the first chunk announces the role, the last one is empty.
    struct Delta: Encodable {
        var role: String?
        var content: String?
    }
}

struct ChatLogprobs: Encodable {
    var content: [Token] = []

    struct Token: Encodable {
        let token: String
        let logprob: Float
        let bytes: [UInt8]
        let top_logprobs: [Alternative]
    }

    struct Alternative: Encodable {
        let token: String
        let logprob: Float
        let bytes: [UInt8]
    }
}

/// `GET /v1/models`
struct ModelList: Encodable {
    let object = "list"
    let data: [Model]

    struct Model: Encodable {
        let id: String
        let object = "model"
        let created: Int
        let owned_by = "punica"
        /// The base model's directory, or the adapter's.
        let root: String
        /// The base model's name, for an adapter.
        @EncodedAsNull var parent: String?
        let max_model_len: Int
    }
}

/// Seconds since 1970, as OpenAI's `created`.
func unixTime() -> Int { Int(Date().timeIntervalSince1970) }

func jsonBuffer(_ value: some Encodable) -> ByteBuffer {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    // Encoding these plain structs cannot fail (logprobs are kept finite).
    return ByteBuffer(bytes: try! encoder.encode(value))
}

func jsonResponse(_ value: some Encodable) -> Response {
    Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: jsonBuffer(value)))
}
