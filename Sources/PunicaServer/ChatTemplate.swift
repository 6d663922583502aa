#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One message of a chat, as the template sees it.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Why a chat cannot be rendered. The server refuses such requests rather than render a prompt the model was not
/// trained on.
public enum ChatTemplateError: Error, Equatable, CustomStringConvertible {
    case missing
    case unrecognized
    case unsupportedVariant(family: String, reason: String)
    /// The conversation breaks a rule the template itself enforces (it would raise an exception in transformers).
    case invalidConversation(family: String, reason: String)

    public var description: String {
        switch self {
        case .missing:
            "the model has no chat_template in tokenizer_config.json; use /v1/completions with a prompt"
        case .unrecognized:
            "the model's chat_template is none of the supported families (\(ChatTemplate.Family.allCases.map(\.rawValue).joined(separator: ", "))), "
                + "so chat requests are refused rather than rendered wrongly; use /v1/completions with a prompt"
        case let .unsupportedVariant(family, reason):
            "the model's chat_template looks like \(family) but \(reason), which is not supported; use /v1/completions with a prompt"
        case let .invalidConversation(family, reason):
            "the \(family) chat template requires \(reason)"
        }
    }
}

/// A model's chat template, recognized by family from its Jinja text and rendered by a built-in formatter that
/// produces what transformers' `apply_chat_template(messages, add_generation_prompt=True)` produces for it.
///
/// Recognizing instead of interpreting Jinja keeps the server small; a template that is none of the families, or a
/// variant of one whose output would differ (Mistral's `[INST]` without `<<SYS>>`, Phi-3's `<|end|>`, reasoning
/// `<think>` templates), is refused with `ChatTemplateError` instead of being rendered approximately.
public struct ChatTemplate: Sendable {
    public enum Family: String, CaseIterable, Sendable {
        /// `<s>[INST] <<SYS>>\n…\n<</SYS>>\n\nuser [/INST] assistant </s>`
        case llama2 = "Llama-2 [INST]"
        /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`, optionally Llama 3.1's dated system header.
        case llama3 = "Llama-3 <|start_header_id|>"
        /// `<|im_start|>role\ncontent<|im_end|>\n`
        case chatML = "ChatML <|im_start|>"
        /// `<|role|>\ncontent</s>\n`
        case zephyr = "Zephyr <|user|>"
        /// `role: content\n` lines then `assistant:` (the bundled model's template).
        case roleColon = "role: content"
    }

    public let family: Family
    private let bosToken: String
    private let eosToken: String
    /// ChatML, Zephyr and role-colon templates start with BOS only when they render `bos_token`.
    private let rendersBOS: Bool
    /// ChatML templates (Qwen) that insert a system message when the chat has none.
    private let defaultSystemMessage: String?
    /// Llama 3.1+: the system header always present, with a knowledge cutoff and the date.
    private let dateHeader: DateHeader?

    private enum DateHeader {
        /// `strftime_now("%d %b %Y")`: today.
        case today
        /// The template's fallback `date_string`.
        case fixed(String)
    }

    /// Recognizes `template` (tokenizer_config.json's `chat_template`). `bosToken` and `eosToken` are the texts the
    /// template's `bos_token` and `eos_token` render as.
    public init(template: String?, bosToken: String, eosToken: String) throws(ChatTemplateError) {
        guard let template, !template.isEmpty else { throw .missing }
        var defaultSystemMessage: String?
        var dateHeader: DateHeader?
        if template.contains("<|start_header_id|>") {
            family = .llama3
            if template.contains("Cutting Knowledge Date") {
                if template.contains("strftime_now") {
                    dateHeader = .today
                } else if let date = Self.literals(after: "date_string = \"", until: "\"", in: template).first {
                    dateHeader = .fixed(date)
                } else {
                    throw .unsupportedVariant(family: family.rawValue, reason: "its knowledge-cutoff header has no date_string")
                }
            }
        } else if template.contains("<|im_start|>") {
            family = .chatML
            if template.contains("<think>") {
                throw .unsupportedVariant(family: family.rawValue, reason: "it renders reasoning (<think>) blocks")
            }
            // The newline after the role is a Jinja escape in most templates, a real one in some.
            defaultSystemMessage = ["\\n", "\n"].lazy.compactMap { Self.literals(after: "<|im_start|>system" + $0, until: "<|im_end|>", in: template).first }
                .first.map { $0.replacing("\\n", with: "\n") }
        } else if template.contains("<|user|>") {
            family = .zephyr
            if template.contains("<|end|>") {
                throw .unsupportedVariant(family: family.rawValue, reason: "it ends messages with <|end|> (Phi-3)")
            }
        } else if template.contains("[INST]") {
            family = .llama2
            if !template.contains("<<SYS>>") {
                throw .unsupportedVariant(family: family.rawValue, reason: "it has no <<SYS>> block (Mistral's format)")
            }
        } else if template.filter({ !$0.isWhitespace }).contains("['role']}}:{{message['content']}}") {
            family = .roleColon
        } else {
            throw .unrecognized
        }
        self.bosToken = bosToken
        self.eosToken = eosToken
        rendersBOS = template.contains("bos_token")
        self.defaultSystemMessage = defaultSystemMessage
        self.dateHeader = dateHeader
    }

    /// The prompt for `messages`, ending where the assistant's reply starts. Special tokens appear as text (`<s>`),
    /// so encode it without adding special tokens.
    public func render(_ messages: [ChatMessage], now: Date = Date()) throws(ChatTemplateError) -> String {
        let bos = rendersBOS ? bosToken : ""
        switch family {
        case .llama2:
            var turns = messages[...]
            let system = turns.first?.role == "system" ? turns.removeFirst().content : nil
            var prompt = ""
            for (index, message) in turns.enumerated() {
                guard message.role == (index % 2 == 0 ? "user" : "assistant") else {
                    throw .invalidConversation(family: family.rawValue,
                                               reason: "roles alternating user/assistant/user/… after an optional system message")
                }
                if message.role == "user" {
                    let content = if index == 0, let system { "<<SYS>>\n\(system)\n<</SYS>>\n\n\(message.content)" } else { message.content }
                    prompt += "\(bosToken)[INST] \(content.strippingWhitespace()) [/INST]"
                } else {
                    prompt += " \(message.content.strippingWhitespace()) \(eosToken)"
                }
            }
            return prompt
        case .llama3:
            func header(_ role: String) -> String { "<|start_header_id|>\(role)<|end_header_id|>\n\n" }
            var turns = messages[...]
            var prompt = bosToken
            if let dateHeader {
                let system = turns.first?.role == "system" ? turns.removeFirst().content.strippingWhitespace() : ""
                let date = switch dateHeader {
                case .today: Self.dayMonthYear(now)
                case .fixed(let date): date
                }
                prompt += header("system") + "Cutting Knowledge Date: December 2023\nToday Date: \(date)\n\n\(system)<|eot_id|>"
            }
            for message in turns { prompt += header(message.role) + message.content.strippingWhitespace() + "<|eot_id|>" }
            return prompt + header("assistant")
        case .chatML:
            var prompt = bos
            if let defaultSystemMessage, messages.first?.role != "system" {
                prompt += "<|im_start|>system\n\(defaultSystemMessage)<|im_end|>\n"
            }
            for message in messages { prompt += "<|im_start|>\(message.role)\n\(message.content)<|im_end|>\n" }
            return prompt + "<|im_start|>assistant\n"
        case .zephyr:
            return bos + messages.map { "<|\($0.role)|>\n\($0.content)\(eosToken)\n" }.joined() + "<|assistant|>\n"
        case .roleColon:
            return bos + messages.map { "\($0.role): \($0.content)\n" }.joined() + "assistant:"
        }
    }

    /// The plain literal texts (no Jinja in them) between each `start` and the next `end` in `template`.
    private static func literals(after start: String, until end: String, in template: String) -> [String] {
        template.ranges(of: start).compactMap { from in
            guard let to = template[from.upperBound...].range(of: end) else { return nil }
            let text = template[from.upperBound ..< to.lowerBound]
            return text.contains(where: { "{}'\"+".contains($0) }) ? nil : String(text)
        }
    }

    /// `strftime("%d %b %Y")` in UTC: "26 Jul 2024".
    private static func dayMonthYear(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.day, .month, .year], from: date)
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let day = parts.day!
        return "\(day < 10 ? "0" : "")\(day) \(months[parts.month! - 1]) \(parts.year!)"
    }
}

extension String {
    /// Python's `str.strip()` (Jinja's `trim` and `.strip()`): without leading and trailing whitespace.
    func strippingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(scalars[first...last])
    }
}
