import Foundation
@testable import PunicaServer
import TestSupport
import Testing

/// Tests/Fixtures/chat_templates/expected.json: real templates of current model families rendered by transformers'
/// own renderer (scripts/make_chat_template_fixtures.py).
struct ChatTemplateFixture {
    struct Render {
        let conversation: String
        let addGenerationPrompt: Bool
        let kwargs: [String: JinjaValue]
        let prompt: String?
        let error: String?
    }
    struct Template {
        let name: String
        let specialTokens: [String: String]
        let renders: [Render]
        var text: String { get throws { String(decoding: try Fixtures.data("chat_templates/templates/\(name).jinja"), as: UTF8.self) } }
    }
    /// Each conversation's `messages` and optional `tools`, keys in the order the script wrote them.
    let conversations: JinjaDict
    let templates: [Template]

    static let shared: ChatTemplateFixture = {
        guard case .dict(let root) = try! OrderedJSON.parse(try! Fixtures.data("chat_templates/expected.json")),
              case .dict(let conversations)? = root["conversations"], case .list(let templates)? = root["templates"] else {
            fatalError("chat_templates/expected.json: unexpected shape")
        }
        func string(_ value: JinjaValue?) -> String? { if case .string(let text)? = value { text } else { nil } }
        func dict(_ value: JinjaValue?) -> JinjaDict { if case .dict(let dict)? = value { dict } else { JinjaDict() } }
        return ChatTemplateFixture(conversations: conversations, templates: templates.map { template in
            let fields = dict(template)
            guard case .list(let renders)? = fields["renders"] else { fatalError("a template without renders") }
            return Template(
                name: string(fields["name"])!,
                specialTokens: Dictionary(uniqueKeysWithValues: dict(fields["special_tokens"]).entries.map { ($0.key.text, $0.value.text) }),
                renders: renders.map { render in
                    let fields = dict(render)
                    return Render(conversation: string(fields["conversation"])!, addGenerationPrompt: fields["add_generation_prompt"]?.truthy ?? true,
                                  kwargs: Dictionary(uniqueKeysWithValues: dict(fields["kwargs"]).entries.map { ($0.key.text, $0.value) }),
                                  prompt: string(fields["prompt"]), error: string(fields["error"]))
                })
        })
    }()

    func input(_ render: Render) -> ChatTemplateInput {
        let conversation = if case .dict(let dict)? = conversations[.string(render.conversation)] { dict } else { JinjaDict() }
        guard case .list(let messages)? = conversation["messages"] else { fatalError("conversation \(render.conversation) has no messages") }
        let tools: [JinjaValue]? = if case .list(let tools)? = conversation["tools"] { tools } else { nil }
        return ChatTemplateInput(messages: messages, tools: tools, addGenerationPrompt: render.addGenerationPrompt, extra: render.kwargs)
    }
}

@Suite struct ChatTemplateTests {
    /// The day the fixture's `strftime_now` renders: 2025-03-09 (noon, so any time zone within 11 hours agrees).
    static let fixtureDay = Date(timeIntervalSince1970: 1_741_521_600)

    @Test(arguments: ChatTemplateFixture.shared.templates.map(\.name))
    func rendersWhatTransformersRenders(_ name: String) throws {
        let fixture = ChatTemplateFixture.shared
        let entry = try #require(fixture.templates.first { $0.name == name })
        let template = try ChatTemplate(templates: ["default": try entry.text], source: "\(name).jinja", specialTokens: entry.specialTokens)
        for render in entry.renders {
            let label = "\(render.conversation), add_generation_prompt \(render.addGenerationPrompt) \(render.kwargs.keys.sorted())"
            if let expected = render.prompt {
                let prompt = try template.render(fixture.input(render), now: Self.fixtureDay)
                #expect(prompt == expected, "\(label)")
            } else {
                // transformers failed: raise_exception's message is the client's; other failures are the template's.
                do {
                    let prompt = try template.render(fixture.input(render), now: Self.fixtureDay)
                    Issue.record("\(label): rendered \(pythonRepr(prompt)) but transformers failed with \(render.error ?? "")")
                } catch .refused(let message) {
                    #expect("TemplateError: " + message == render.error, "\(label)")
                } catch .renderFailed {
                    #expect(render.error?.hasPrefix("TemplateError: ") != true, "\(label): transformers raised \(render.error ?? "")")
                } catch {
                    Issue.record("\(label): \(error)")
                }
            }
        }
    }

    @Test func aMissingTemplateIsNamed() {
        #expect(throws: ChatTemplateError.missing) { try ChatTemplate(templates: [:], source: "x", specialTokens: [:]) }
    }

    @Test func theToolUseTemplateIsUsedWithTools() throws {
        let template = try ChatTemplate(templates: ["default": "plain", "tool_use": "{{ tools | length }} tools"], source: "x", specialTokens: [:])
        let message = JinjaValue.dict(JinjaDict([(.string("role"), .string("user")), (.string("content"), .string("Hi"))]))
        #expect(try template.render(ChatTemplateInput(messages: [message])) == "plain")
        #expect(try template.render(ChatTemplateInput(messages: [message], tools: [.dict(JinjaDict())])) == "1 tools")
    }

    @Test func syntaxErrorsNameTheTemplateAndLine() {
        #expect(throws: ChatTemplateError.invalidTemplate(source: "chat_template.jinja", reason: "line 2: {% if %} opened here is not closed (expected {% elif or else or endif %})")) {
            try ChatTemplate(templates: ["default": "hello\n{% if x %}"], source: "chat_template.jinja", specialTokens: [:])
        }
        #expect(throws: ChatTemplateError.invalidTemplate(source: "chat_template.jinja", reason: "line 1: unknown or unsupported tag {% include %}")) {
            try ChatTemplate(templates: ["default": "{% include 'other' %}"], source: "chat_template.jinja", specialTokens: [:])
        }
    }

    @Test func reasoningIsAliasedAsTransformersDoes() throws {
        let template = try ChatTemplate(templates: ["default": "{% for m in messages %}{{ m | tojson }}{% endfor %}"], source: "x", specialTokens: [:])
        let message = JinjaValue.dict(JinjaDict([(.string("role"), .string("assistant")), (.string("reasoning"), .string("r"))]))
        #expect(try template.render(ChatTemplateInput(messages: [message]))
                == #"{"thinking": "r", "role": "assistant", "reasoning": "r", "reasoning_content": "r"}"#)
    }
}

/// The snippets of expected.json: small templates for the language features (filters, tests, macros, whitespace
/// control…) rendered by jinja2 in transformers' environment.
@Suite struct JinjaTests {
    struct Snippet { let template: String; let prompt: String?; let error: String? }

    static let fixture: (variables: [String: JinjaValue], snippets: [Snippet]) = {
        guard case .dict(let root) = try! OrderedJSON.parse(try! Fixtures.data("chat_templates/expected.json")),
              case .dict(let variables)? = root["snippet_variables"], case .list(let snippets)? = root["snippets"] else {
            fatalError("chat_templates/expected.json: no snippets")
        }
        func string(_ value: JinjaValue?) -> String? { if case .string(let text)? = value { text } else { nil } }
        return (Dictionary(uniqueKeysWithValues: variables.entries.map { ($0.key.text, $0.value) }), snippets.map { snippet in
            guard case .dict(let fields) = snippet else { fatalError("a snippet is not an object") }
            return Snippet(template: string(fields["template"])!, prompt: string(fields["prompt"]), error: string(fields["error"]))
        })
    }()

    @Test(arguments: 0..<fixture.snippets.count) func rendersWhatJinja2Renders(_ index: Int) throws {
        let snippet = Self.fixture.snippets[index]
        let template = try JinjaTemplate(snippet.template)
        let render = { try template.render(Self.fixture.variables, now: ChatTemplateTests.fixtureDay) }
        if let expected = snippet.prompt {
            #expect(try render() == expected, "\(snippet.template)")
        } else {
            #expect(throws: JinjaError.self, "\(snippet.template): jinja2 failed with \(snippet.error ?? "")") { try render() }
        }
    }

    @Test func errorsNameTheirLine() {
        #expect(throws: JinjaError(kind: .runtime, message: "'x' is undefined", line: 3)) {
            try JinjaTemplate("a\nb\n{{ x.y }}").render([:])
        }
        #expect(throws: JinjaError(kind: .raised, message: "no", line: 2)) {
            try JinjaTemplate("{% for i in [1] %}\n{{ raise_exception('no') }}{% endfor %}").render([:])
        }
    }

    @Test func templatesCannotChangeListsOrDicts() {
        #expect(throws: JinjaError.self) { try JinjaTemplate("{% set l = [] %}{{ l.append(1) }}").render([:]) }
        #expect(throws: JinjaError.self) { try JinjaTemplate("{% set d = {} %}{{ d.update({'a': 1}) }}").render([:]) }
    }

    /// Arithmetic a template could abuse finishes quickly and never traps.
    @Test func arithmeticIsBounded() throws {
        _ = try JinjaTemplate("{{ 3 ** 100000000000 }}").render([:])
        #expect(throws: JinjaError.self) { try JinjaTemplate("{{ 'ab' * 100000000 }}").render([:]) }
        #expect(throws: JinjaError.self) { try JinjaTemplate("{{ range(1000000) | length }}").render([:]) }
        _ = try JinjaTemplate("{{ -x }} {{ x | abs }}").render(["x": .int(.min)])
        #expect(throws: JinjaError.self) { try JinjaTemplate("{{ x // -1 }}").render(["x": .int(.min)]) }
    }

    @Test func runawayRecursionIsAnError() {
        #expect(throws: JinjaError.self) { try JinjaTemplate("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").render([:]) }
    }

    @Test func orderedJSONKeepsKeyOrderAndNumberKinds() throws {
        let value = try OrderedJSON.parse(Data(#"{"z": 1, "a": [1.0, 2, "\u00e9\ud83d\ude00", null, true], "m": {}}"#.utf8))
        #expect(try value.json(indent: nil) == #"{"z": 1, "a": [1.0, 2, "é😀", null, true], "m": {}}"#)
        #expect(throws: JinjaError.self) { try OrderedJSON.parse(Data(#"{"a": }"#.utf8)) }
    }
}

extension ChatTemplateTests {
    /// transformers passes `tools=None` (and `documents=None`) when there are none: defined, and none.
    @Test func noToolsIsNoneNotUndefined() throws {
        let template = try ChatTemplate(templates: ["default": "{{ tools is defined }} {{ tools is none }} {{ documents is none }} {{ bos_token }}"],
                                        source: "x", specialTokens: ["bos_token": "<s>"])
        #expect(try template.render(ChatTemplateInput(messages: [])) == "True True True <s>")
    }
}
