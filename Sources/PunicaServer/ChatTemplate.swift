#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Why a chat cannot be rendered. Each is a 400 for the chat request (completions still work without a template).
public enum ChatTemplateError: Error, Equatable, CustomStringConvertible {
    case missing
    /// The template does not parse, or uses something the interpreter does not support: `source` names it.
    case invalidTemplate(source: String, reason: String)
    /// Rendering failed (a template bug, or a conversation of a shape the template cannot handle).
    case renderFailed(source: String, reason: String)
    /// The template called `raise_exception(message)`: it refuses this conversation (transformers raises too).
    case refused(String)

    public var description: String {
        switch self {
        case .missing:
            "the model has no chat template (chat_template.jinja, or chat_template in tokenizer_config.json); use /v1/completions with a prompt"
        case let .invalidTemplate(source, reason): "the model's chat template (\(source)) cannot be used: \(reason)"
        case let .renderFailed(source, reason): "the model's chat template (\(source)) failed on this conversation: \(reason)"
        case let .refused(message): "the model's chat template refused this conversation: \(message)"
        }
    }
}

/// What a chat template renders: the variables transformers' `apply_chat_template` passes it.
struct ChatTemplateInput {
    /// The messages as the client sent them (objects with `role`, `content`, `tool_calls`…), in JSON's order.
    var messages: [JinjaValue]
    /// The `tools` of the request (JSON schemas), or nil.
    var tools: [JinjaValue]?
    var addGenerationPrompt = true
    /// Extra variables (vLLM's `chat_template_kwargs`, e.g. `enable_thinking`).
    var extra: [String: JinjaValue] = [:]
}

/// A model's chat template (Jinja), rendered by `JinjaTemplate` exactly as transformers' `apply_chat_template(messages,
/// tools=…, add_generation_prompt=…)` renders it with jinja2, special tokens (`bos_token`…) included.
public struct ChatTemplate: @unchecked Sendable {  // immutable after init; the parsed tree holds no shared state
    /// Where the template came from, for messages ("chat_template.jinja").
    public let source: String
    private let template: JinjaTemplate
    /// The "tool_use" template of a list of named templates, used when the request has tools.
    private let toolTemplate: JinjaTemplate?
    private let specialTokens: [String: JinjaValue]

    /// `templates` by name as the tokenizer read them ("default", "tool_use"…); `specialTokens` the texts of
    /// `bos_token`, `eos_token`… as tokenizer_config.json names them.
    public init(templates: [String: String], source: String, specialTokens: [String: String]) throws(ChatTemplateError) {
        guard let text = templates["default"], !text.isEmpty else { throw .missing }
        self.source = source
        func parse(_ text: String, _ name: String) throws(ChatTemplateError) -> JinjaTemplate {
            do {
                return try JinjaTemplate(text)
            } catch {
                throw .invalidTemplate(source: templates.count > 1 ? "\(source), template \"\(name)\"" : source, reason: "\(error)")
            }
        }
        template = try parse(text, "default")
        toolTemplate = try templates["tool_use"].map { (text) throws(ChatTemplateError) in try parse(text, "tool_use") }
        self.specialTokens = specialTokens.mapValues { .string($0) }
    }

    /// The prompt for `input`. Special tokens appear as text (`<s>`), so encode it without adding special tokens.
    /// `now` is what `strftime_now` formats (Llama 3.x writes today's date).
    func render(_ input: ChatTemplateInput, now: Date = Date()) throws(ChatTemplateError) -> String {
        var variables = specialTokens
        variables["messages"] = .list(input.messages.map(Self.aliasingReasoning))
        variables["tools"] = input.tools.map { .list($0) } ?? JinjaValue.none
        variables["documents"] = JinjaValue.none
        variables["add_generation_prompt"] = .bool(input.addGenerationPrompt)
        variables.merge(input.extra) { _, extra in extra }
        let chosen = input.tools != nil ? toolTemplate ?? template : template
        do {
            return try chosen.render(variables, now: now)
        } catch let error as JinjaError {
            if error.kind == .raised { throw .refused(error.message) }
            throw .renderFailed(source: source, reason: error.description)
        } catch {
            throw .renderFailed(source: source, reason: "\(error)")
        }
    }

    /// transformers fills `reasoning_content` (what templates read) and `thinking` from whichever of the names
    /// `reasoning_content`, `thinking`, `reasoning` a message has: `{"thinking": r, **message, "reasoning_content": r}`.
    private static func aliasingReasoning(_ message: JinjaValue) -> JinjaValue {
        guard case .dict(var dict) = message,
              let reasoning = ["reasoning_content", "thinking", "reasoning"].lazy.compactMap({ dict[$0] }).first(where: { !$0.isNone }) else {
            return message
        }
        let thinking = dict["thinking"] ?? reasoning
        dict["thinking"] = nil
        dict.entries.insert((.string("thinking"), thinking), at: 0)
        dict["reasoning_content"] = reasoning
        return .dict(dict)
    }
}
