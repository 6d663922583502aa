#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaTokenizer
import TestSupport
import Testing

/// BOS/EOS, chat template and token lookups from tokenizer_config.json and generation_config.json.
struct ConfigTests {
    @Test func llama3StyleSpecialTokens() throws {
        let tokenizer = try Tokenizer(directory: Fixtures.path("tokenizers/bytelevel"))
        let begin = try #require(tokenizer.id(forToken: "<|begin_of_text|>"))
        let end = try #require(tokenizer.id(forToken: "<|end_of_text|>"))
        let eot = try #require(tokenizer.id(forToken: "<|eot_id|>"))
        #expect(tokenizer.bosTokenID == begin)
        // tokenizer_config.json's eos_token first, then generation_config.json's [end_of_text, eot_id].
        #expect(tokenizer.eosTokenIDs == [eot, end])
        #expect(tokenizer.vocabularySize == 605)
        #expect(tokenizer.chatTemplates["default"]?.hasPrefix("{{ bos_token }}") == true)
        #expect(tokenizer.specialTokenTexts == ["bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"])
        #expect(tokenizer.encode("Hi").first == begin)
        #expect(tokenizer.encode("Hi", addSpecialTokens: false).first != begin)
    }

    @Test func llama2StyleSpecialTokens() throws {
        let tokenizer = try Tokenizer(directory: Fixtures.path("tokenizers/sentencepiece"))
        #expect(tokenizer.bosTokenID == 1)
        #expect(tokenizer.eosTokenIDs == [2])
        #expect(tokenizer.vocabularySize == 602)
        #expect(tokenizer.chatTemplates["default"]?.contains("[INST]") == true)
        #expect(tokenizer.encode("Hi").first == 1)
        #expect(tokenizer.encode("Hi", addSpecialTokens: false).first != 1)
    }

    @Test func tokenLookups() throws {
        let tokenizer = try Tokenizer(directory: Fixtures.path("tokenizers/sentencepiece"))
        #expect(tokenizer.id(forToken: "<0x41>") == 3 + 0x41)
        #expect(tokenizer.id(forToken: "<s>") == 1)
        // A `normalized` added token is looked up by its content as written, not by its normalized form.
        #expect(tokenizer.id(forToken: "Punica") == 601)
        #expect(tokenizer.id(forToken: "▁Punica") == nil)
        #expect(tokenizer.id(forToken: "no such token") == nil)
    }

    /// Without a post-processor, add_bos_token/add_eos_token decide what `encode` adds.
    @Test func addBOSAndEOSWithoutPostProcessor() throws {
        let tokenizerJSON = try Fixtures.data("tokenizers/sentencepiece-metaspace-split/tokenizer.json")
        let config = #"{"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true, "add_eos_token": true}"#
        let tokenizer = try Tokenizer(tokenizerJSON: tokenizerJSON, tokenizerConfig: Data(config.utf8),
                                      generationConfig: nil)
        let plain = tokenizer.encode("Hello", addSpecialTokens: false)
        #expect(tokenizer.encode("Hello") == [1] + plain + [2])
        let withoutConfig = try Tokenizer(directory: Fixtures.path("tokenizers/sentencepiece-metaspace-split"))
        #expect(withoutConfig.encode("Hello") == plain)
    }

    @Test func idsFromGenerationConfigAlone() throws {
        let tokenizerJSON = try Fixtures.data("tokenizers/sentencepiece/tokenizer.json")
        let generation = #"{"bos_token_id": 1, "eos_token_id": [2, 0]}"#
        let tokenizer = try Tokenizer(tokenizerJSON: tokenizerJSON, tokenizerConfig: nil,
                                      generationConfig: Data(generation.utf8))
        #expect(tokenizer.bosTokenID == 1)
        #expect(tokenizer.eosTokenIDs == [2, 0])
        #expect(tokenizer.chatTemplates.isEmpty)
    }

    /// As in transformers, a token tokenizer_config.json names (here pad_token) is special even when
    /// tokenizer.json has it only in the model's vocabulary: it is matched in text and skipped when decoding.
    @Test func namedTokensBecomeSpecial() throws {
        let tokenizerJSON = try Fixtures.data("tokenizers/sentencepiece/tokenizer.json")
        let config = #"{"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<0x00>"}"#
        let tokenizer = try Tokenizer(tokenizerJSON: tokenizerJSON, tokenizerConfig: Data(config.utf8),
                                      generationConfig: nil)
        let pad = 3
        #expect(tokenizer.encode("a<0x00>b").contains(pad))
        #expect(tokenizer.decode([pad, 3 + 0x41]) == "A")
        #expect(tokenizer.decode([pad, 3 + 0x41], skipSpecialTokens: false) == "\u{0}A")
    }

    @Test func chatTemplateList() throws {
        let tokenizerJSON = try Fixtures.data("tokenizers/sentencepiece/tokenizer.json")
        let config = #"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#
        let tokenizer = try Tokenizer(tokenizerJSON: tokenizerJSON, tokenizerConfig: Data(config.utf8),
                                      generationConfig: nil)
        #expect(tokenizer.chatTemplates == ["default": "D", "tool_use": "T"])
        #expect(tokenizer.chatTemplateSource == "tokenizer_config.json chat_template")
    }

    /// chat_template.jinja (transformers ≥ 4.43 writes the template there) takes the place of tokenizer_config.json's.
    @Test func chatTemplateFile() throws {
        let tokenizerJSON = try Fixtures.data("tokenizers/sentencepiece/tokenizer.json")
        let tokenizer = try Tokenizer(tokenizerJSON: tokenizerJSON, tokenizerConfig: Data(#"{"chat_template": "old"}"#.utf8),
                                      generationConfig: nil, chatTemplateFiles: ["default": Data("{{ messages }}\n".utf8)])
        #expect(tokenizer.chatTemplates == ["default": "{{ messages }}\n"])
        #expect(tokenizer.chatTemplateSource == "chat_template.jinja")
    }

    /// A model directory as transformers saves named templates: chat_template.jinja and additional_chat_templates/.
    @Test func chatTemplateFilesOfADirectory() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("punica-chat-templates-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("additional_chat_templates"), withIntermediateDirectories: true)
        try Fixtures.data("tokenizers/sentencepiece/tokenizer.json").write(to: directory.appendingPathComponent("tokenizer.json"))
        try Data("D".utf8).write(to: directory.appendingPathComponent("chat_template.jinja"))
        try Data("T".utf8).write(to: directory.appendingPathComponent("additional_chat_templates/tool_use.jinja"))
        #expect(try Tokenizer(directory: directory.path).chatTemplates == ["default": "D", "tool_use": "T"])
    }
}
