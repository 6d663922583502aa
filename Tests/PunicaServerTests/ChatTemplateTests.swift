import Foundation
import PunicaServer
import TestSupport
import Testing

/// Tests/Fixtures/chat_templates/expected.json, rendered by Jinja as transformers does (scripts/make_chat_template_fixtures.py).
struct ChatTemplateFixture: Decodable {
    struct Message: Decodable { let role: String; let content: String }
    struct Render: Decodable { let messages: [Message]; let prompt: String?; let error: String? }
    struct Template: Decodable {
        let name: String
        let family: String
        let template: String
        let bos_token: String
        let eos_token: String
        let renders: [Render]
    }
    struct Refused: Decodable { let name: String; let template: String }
    let templates: [Template]
    let refused: [Refused]

    static let shared = try! JSONDecoder().decode(ChatTemplateFixture.self, from: Fixtures.data("chat_templates/expected.json"))
}

@Suite struct ChatTemplateTests {
    /// The day the fixture's `strftime_now` renders: 2025-03-09.
    static let fixtureDay = Date(timeIntervalSince1970: 1_741_521_600)

    @Test(arguments: ChatTemplateFixture.shared.templates.map(\.name))
    func rendersWhatTransformersRenders(_ name: String) throws {
        let fixture = try #require(ChatTemplateFixture.shared.templates.first { $0.name == name })
        let template = try ChatTemplate(template: fixture.template, bosToken: fixture.bos_token, eosToken: fixture.eos_token)
        #expect(template.family.rawValue == fixture.family)
        for render in fixture.renders {
            let messages = render.messages.map { ChatMessage(role: $0.role, content: $0.content) }
            if let expected = render.prompt {
                #expect(try template.render(messages, now: Self.fixtureDay) == expected)
            } else {
                #expect(throws: ChatTemplateError.self, "transformers refused: \(render.error ?? "")") {
                    try template.render(messages, now: Self.fixtureDay)
                }
            }
        }
    }

    @Test(arguments: ChatTemplateFixture.shared.refused.map(\.name))
    func refusesVariantsItWouldRenderWrongly(_ name: String) throws {
        let fixture = try #require(ChatTemplateFixture.shared.refused.first { $0.name == name })
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(template: fixture.template, bosToken: "<s>", eosToken: "</s>") }
    }

    @Test func aMissingTemplateIsNamed() {
        #expect(throws: ChatTemplateError.missing) { try ChatTemplate(template: nil, bosToken: "<s>", eosToken: "</s>") }
    }
}
