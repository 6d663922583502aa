#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaTokenizer
import Testing

/// Files that cannot be loaded give errors that name the file and the field.
struct ErrorTests {
    @Test func missingTokenizerJSON() {
        let directory = "/nonexistent/model-\(UInt64.random(in: 0...UInt64.max))"
        #expect(throws: TokenizerError.missingFile(path: "\(directory)/tokenizer.json")) {
            try Tokenizer(directory: directory)
        }
        #expect(TokenizerError.missingFile(path: "\(directory)/tokenizer.json").description
                == "\(directory)/tokenizer.json: file not found")
    }

    @Test func malformedJSON() {
        let error = #expect(throws: TokenizerError.self) {
            try Tokenizer(tokenizerJSON: Data(#"{"model": {"type": "BPE", "#.utf8), tokenizerConfig: nil,
                          generationConfig: nil)
        }
        #expect(error?.description.hasPrefix("tokenizer.json: invalid JSON") == true, "\(String(describing: error))")

        let configError = #expect(throws: TokenizerError.self) {
            try Tokenizer(tokenizerJSON: Data(Self.tokenizerJSON().utf8), tokenizerConfig: Data("{".utf8),
                          generationConfig: nil)
        }
        #expect(configError?.description.hasPrefix("tokenizer_config.json: invalid JSON") == true)
    }

    @Test func unsupportedModelType() {
        let json = #"{"model": {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "[UNK]"}}"#
        let error = #expect(throws: TokenizerError.self) {
            try Tokenizer(tokenizerJSON: Data(json.utf8), tokenizerConfig: nil, generationConfig: nil)
        }
        #expect(error?.description == #"tokenizer.json: model.type "WordPiece" is not supported (supported: BPE)"#)
    }

    /// Each supported component rejects what it does not implement, naming the field.
    @Test(arguments: [
        ("normalizer", #"{"type": "NFKC"}"#, "normalizer.type"),
        ("normalizer", #"{"type": "Replace", "pattern": {"Regex": " +"}, "content": " "}"#, "normalizer.pattern"),
        ("pre_tokenizer", #"{"type": "Sequence", "pretokenizers": [{"type": "Punctuation"}]}"#,
         "pre_tokenizer.pretokenizers[0].type"),
        ("pre_tokenizer", #"{"type": "Split", "pattern": {"Regex": "\\d+"}, "behavior": "Isolated"}"#,
         "pre_tokenizer.pattern"),
        ("pre_tokenizer", #"{"type": "Split", "pattern": {"String": ""}, "behavior": "Isolated"}"#,
         "pre_tokenizer.pattern"),
        ("pre_tokenizer", #"{"type": "Split", "pattern": {"String": " "}, "behavior": "Merged"}"#,
         "pre_tokenizer.behavior"),
        ("decoder", #"{"type": "CTC"}"#, "decoder.type"),
        ("decoder", #"{"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "Replace", "#
            + #""pattern": {"String": "_"}, "content": " "}]}"#, "decoder.decoders[1].type"),
        ("post_processor", #"{"type": "RobertaProcessing"}"#, "post_processor.type"),
        ("model", #"{"type": "BPE", "vocab": {}, "merges": [], "dropout": 0.1}"#, "model.dropout"),
    ])
    func unsupportedComponent(key: String, value: String, field: String) {
        let error = #expect(throws: TokenizerError.self) {
            try Tokenizer(tokenizerJSON: Data(Self.tokenizerJSON(key: key, value: value).utf8), tokenizerConfig: nil,
                          generationConfig: nil)
        }
        guard case .unsupported(let file, let actualField, _, _) = error else {
            Issue.record("expected an unsupported error, got \(String(describing: error))")
            return
        }
        #expect(file == "tokenizer.json")
        #expect(actualField == field)
    }

    /// Two tokens on one id (or an id out of range) are refused with the tokens named, not a dictionary trap.
    @Test(arguments: [
        (#"{"type": "BPE", "vocab": {"a": 0, "b": 0, "ab": 2}, "merges": []}"#, "model.vocab", #""a" and "b" both have id 0"#),
        (#"{"type": "BPE", "vocab": {"a": -1, "b": 1}, "merges": []}"#, "model.vocab", #""a" has id -1, outside 0...2147483647"#),
        (#"{"type": "BPE", "vocab": {"a": 9223372036854775807}, "merges": []}"#, "model.vocab", #""a" has id 9223372036854775807, outside 0...2147483647"#),
    ])
    func duplicateOrOutOfRangeVocabularyIDs(model: String, field: String, problem: String) {
        #expect(throws: TokenizerError.invalidValue(file: "tokenizer.json", field: field, problem: problem)) {
            try Tokenizer(tokenizerJSON: Data(Self.tokenizerJSON(key: "model", value: model).utf8), tokenizerConfig: nil, generationConfig: nil)
        }
    }

    @Test(arguments: [
        #"[{"id": 5, "content": "<s>"}, {"id": 5, "content": "</s>"}]"#,
        #"[{"id": 5, "content": "<s>"}, {"id": 6, "content": "<s>"}]"#,
    ])
    func duplicateAddedTokens(addedTokens: String) {
        #expect(throws: TokenizerError.invalidValue(file: "tokenizer.json", field: "added_tokens",
                                                    problem: #""<s>" (id 5) shares its id or content with another added token"#)) {
            try Tokenizer(tokenizerJSON: Data(Self.tokenizerJSON(key: "added_tokens", value: addedTokens).utf8), tokenizerConfig: nil,
                          generationConfig: nil)
        }
    }

    @Test func addedTokenIDOutOfRange() {
        let json = Self.tokenizerJSON(key: "added_tokens", value: #"[{"id": 4294967296, "content": "<s>"}]"#)
        #expect(throws: TokenizerError.invalidValue(file: "tokenizer.json", field: "added_tokens[0].id",
                                                    problem: "must be in 0...2147483647 (found 4294967296)")) {
            try Tokenizer(tokenizerJSON: Data(json.utf8), tokenizerConfig: nil, generationConfig: nil)
        }
    }

    /// A FIFO or a directory in place of tokenizer.json is refused at once, not waited on.
    @Test func onlyRegularFilesAreRead() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("punica-tok-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/tokenizer.json"
        for make in [{ mkfifo(path, 0o600) }, { mkdir(path, 0o700) }] {
            try? FileManager.default.removeItem(atPath: path)
            #expect(make() == 0)
            #expect(throws: TokenizerError.notRegularFile(path: path)) { try Tokenizer(directory: directory) }
        }
        #expect(TokenizerError.notRegularFile(path: path).description == "\(path): not a regular file (a directory, FIFO or device is refused)")
    }

    @Test func mergeOfUnknownToken() {
        let json = Self.tokenizerJSON(key: "model", value: #"{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}"#)
        #expect(throws: TokenizerError.invalidValue(file: "tokenizer.json", field: "model.merges[0]",
                                                    problem: #""a b" needs a token that is not in model.vocab"#)) {
            try Tokenizer(tokenizerJSON: Data(json.utf8), tokenizerConfig: nil, generationConfig: nil)
        }
    }

    /// A minimal valid tokenizer.json, or one with its `key` member set to `value`.
    private static func tokenizerJSON(key: String? = nil, value: String = "") -> String {
        var members = [
            "model": #"{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}"#,
            "decoder": #"{"type": "ByteLevel"}"#,
        ]
        if let key { members[key] = value }
        return "{" + members.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
    }
}
