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

/// A Hugging Face BPE tokenizer read from a model directory: `tokenizer.json` (byte-level like Llama-3 and
/// GPT-2, or SentencePiece-style with byte fallback like Llama-2), plus the BOS/EOS settings and chat templates
/// of `tokenizer_config.json`, `generation_config.json` and `chat_template.jinja`.
///
/// `encode` follows the `tokenizers` library step by step: find added tokens in the input (special tokens
/// written in the text become their ids); normalize the text between them; pre-tokenize it into words; BPE
/// each word; put the post-processor's special tokens (BOS) around the result. `decode` renders token texts
/// with the file's decoder. Both match `tokenizer(text)["input_ids"]` and `tokenizer.decode(ids)` of
/// transformers for the supported files; a file using anything else fails to load with a `TokenizerError`.
///
/// Two choices where transformers versions differ: the post-processor decides which special tokens `encode`
/// adds, and tokenizer_config.json's `add_bos_token`/`add_eos_token` only apply to a file without one
/// (transformers 4 let them override it for Llama tokenizers; transformers 5 ignores them when tokenizer.json
/// exists). `clean_up_tokenization_spaces` is ignored, as transformers 5 ignores it for BPE.
public final class Tokenizer: Sendable {
    /// tokenizer_config.json `bos_token`, else generation_config.json `bos_token_id`.
    public let bosTokenID: Int?
    /// The ids that end a generation: tokenizer_config.json `eos_token`, then generation_config.json
    /// `eos_token_id` (an id or a list of ids), without repeats.
    public let eosTokenIDs: [Int]
    /// The chat templates (Jinja) by name, as transformers loads them: `chat_template.jinja` (what transformers
    /// ≥ 4.43 writes) is "default", `additional_chat_templates/NAME.jinja` the others; else tokenizer_config.json
    /// `chat_template`, a string ("default") or a list of `{"name", "template"}` ("default", "tool_use"…). Empty
    /// when the model has none.
    public let chatTemplates: [String: String]
    /// The file `chatTemplates` came from, for messages.
    public let chatTemplateSource: String
    /// The special tokens tokenizer_config.json names, by field (`bos_token`, `eos_token`, `unk_token`, `pad_token`…):
    /// the variables transformers passes to chat templates.
    public let specialTokenTexts: [String: String]
    /// The number of token ids, added tokens included: the largest id + 1.
    public let vocabularySize: Int

    private let normalizer: Normalizer
    private let preTokenizer: PreTokenizer
    private let model: BPEModel
    /// Added tokens matched in the input as given.
    private let rawAddedTokens: AddedTokenMatcher
    /// `normalized` added tokens, matched in the normalized text between the others.
    private let normalizedAddedTokens: AddedTokenMatcher
    /// Added tokens by content; they take precedence over the model's vocabulary.
    private let addedTokenIDs: [[Unicode.Scalar]: Int]
    private let template: SpecialTokenTemplate
    let decoder: TokenDecoder
    /// The text each id decodes from.
    private let tokenTexts: [Int: [Unicode.Scalar]]
    private let specialTokenIDs: Set<Int>

    /// Loads `tokenizer.json` (required), `tokenizer_config.json`, `generation_config.json`, `chat_template.jinja`
    /// and `additional_chat_templates/NAME.jinja` (optional) from a model directory.
    public convenience init(directory: String) throws {
        let directoryURL = URL(fileURLWithPath: directory)
        func read(_ name: String) throws -> Data? {
            let url = directoryURL.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { return nil }
            return try readRegularFile(url.path)
        }
        guard let tokenizerJSON = try read("tokenizer.json") else {
            throw TokenizerError.missingFile(path: directoryURL.appendingPathComponent("tokenizer.json").path)
        }
        // transformers writes the default template to chat_template.jinja and other named ones ("tool_use") beside it.
        var chatTemplateFiles: [String: Data] = [:]
        if let template = try read("chat_template.jinja") {
            chatTemplateFiles["default"] = template
            let additional = directoryURL.appendingPathComponent("additional_chat_templates")
            for name in (try? FileManager.default.contentsOfDirectory(atPath: additional.path)) ?? [] where name.hasSuffix(".jinja") {
                chatTemplateFiles[String(name.dropLast(6))] = try readRegularFile(additional.appendingPathComponent(name).path)
            }
        }
        try self.init(tokenizerJSON: tokenizerJSON, tokenizerConfig: try read("tokenizer_config.json"),
                      generationConfig: try read("generation_config.json"), chatTemplateFiles: chatTemplateFiles)
    }

    /// The contents of `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`, and of the chat template
    /// files by template name (`chat_template.jinja` is "default").
    public init(tokenizerJSON: Data, tokenizerConfig: Data?, generationConfig: Data?, chatTemplateFiles: [String: Data] = [:]) throws {
        let file = try decodeJSON(TokenizerFile.self, from: tokenizerJSON, file: "tokenizer.json")
        let config = try tokenizerConfig.map { try decodeJSONField(from: $0, file: "tokenizer_config.json") }
        let generation = try generationConfig.map { try decodeJSONField(from: $0, file: "generation_config.json") }

        let normalizer = try Normalizer(file.normalizer)
        let model = try BPEModel(file.model)
        let addedTokens = try Self.addedTokens(file.addedTokens, namedIn: config, model: model, normalizer: normalizer)
        let addedTokenIDs = Dictionary(addedTokens.map { ($0.content, $0.id) }) { first, _ in first }
        guard addedTokenIDs.count == addedTokens.count, Set(addedTokens.map(\.id)).count == addedTokens.count else {
            let repeated = addedTokens.first { token in addedTokens.filter { $0.id == token.id || $0.content == token.content }.count > 1 }!
            throw TokenizerError.invalidValue(file: "tokenizer.json", field: "added_tokens", problem:
                "\"\(String(scalars: repeated.content))\" (id \(repeated.id)) shares its id or content with another added token")
        }
        func namedTokenID(_ field: JSONField?) throws -> Int? {
            try field.flatMap(namedTokenContent).flatMap { addedTokenIDs[Array($0.unicodeScalars)] }
        }
        let configBOS = try namedTokenID(config?["bos_token"])
        let configEOS = try namedTokenID(config?["eos_token"])

        if !file.postProcessor.isNull {
            template = try SpecialTokenTemplate(postProcessor: file.postProcessor)
        } else if let config {
            template = SpecialTokenTemplate(
                prefix: try config["add_bos_token"].bool(default: false) ? [try required(configBOS, config, "bos")] : [],
                suffix: try config["add_eos_token"].bool(default: false) ? [try required(configEOS, config, "eos")] : [])
        } else {
            template = SpecialTokenTemplate()
        }
        bosTokenID = try configBOS ?? generation?["bos_token_id"].optionalInt()
        var eosTokenIDs = configEOS.map { [$0] } ?? []
        for id in try generation.map(generationEOS) ?? [] where !eosTokenIDs.contains(id) { eosTokenIDs.append(id) }
        self.eosTokenIDs = eosTokenIDs
        if !chatTemplateFiles.isEmpty {
            chatTemplates = try chatTemplateFiles.mapValues { data in
                guard let text = String(data: data, encoding: .utf8) else {
                    throw TokenizerError.invalidJSON(file: "chat_template.jinja", detail: "is not UTF-8 text")
                }
                return text
            }
            chatTemplateSource = "chat_template.jinja"
        } else {
            chatTemplates = try config.map { try namedChatTemplates($0["chat_template"]) } ?? [:]
            chatTemplateSource = "tokenizer_config.json chat_template"
        }
        var specialTokenTexts: [String: String] = [:]
        for name in Self.specialTokenFields { specialTokenTexts[name] = try config.flatMap { try namedTokenContent($0[name]) } }
        self.specialTokenTexts = specialTokenTexts

        var tokenTexts = Dictionary(model.vocabulary.map { ($1, $0) }) { first, _ in first }  // ids are unique (BPEModel)
        for token in addedTokens { tokenTexts[token.id] = token.text }
        self.tokenTexts = tokenTexts
        vocabularySize = (tokenTexts.keys.max() ?? -1) + 1
        specialTokenIDs = Set(addedTokens.filter(\.special).map(\.id))
        rawAddedTokens = AddedTokenMatcher(addedTokens.filter { !$0.normalized })
        normalizedAddedTokens = AddedTokenMatcher(addedTokens.filter(\.normalized))
        self.addedTokenIDs = addedTokenIDs
        self.normalizer = normalizer
        self.model = model
        preTokenizer = try PreTokenizer(file.preTokenizer)
        decoder = try TokenDecoder(file.decoder)
    }

    /// The fields of tokenizer_config.json that name special tokens.
    static let specialTokenFields = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

    /// tokenizer.json's `added_tokens`, plus the tokens tokenizer_config.json names (`bos_token`...) that
    /// tokenizer.json only has in the model's vocabulary: transformers makes those special added tokens too.
    private static func addedTokens(_ entries: JSONField, namedIn config: JSONField?, model: BPEModel,
                                    normalizer: Normalizer) throws -> [AddedToken] {
        var tokens = try (entries.isNull ? [] : entries.array()).map { entry in
            try AddedToken(content: entry["content"].string(), id: entry["id"].int(),
                           special: entry["special"].bool(default: false), options: entry, normalizer: normalizer)
        }
        guard let config else { return tokens }
        for name in specialTokenFields {
            let field = config[name]
            guard let content = try namedTokenContent(field),
                  !tokens.contains(where: { $0.content == Array(content.unicodeScalars) }) else { continue }
            guard let id = model.vocabulary[Array(content.unicodeScalars)] else {
                throw field.invalid("\"\(content)\" is not a token of tokenizer.json")
            }
            tokens.append(try AddedToken(content: content, id: id, special: true, options: field, normalizer: normalizer))
        }
        return tokens
    }

    /// The token ids of `text`. With `addSpecialTokens`, the post-processor's special tokens (Llama: BOS) are
    /// put around them. Special tokens written in the text (e.g. "<|eot_id|>") always become their ids.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        // Nearly all the time goes to BPE on words, and text repeats words: each distinct word is merged once.
        var wordCache: [[Unicode.Scalar]: [Int]] = [:]
        func encodeWord(_ word: [Unicode.Scalar]) -> [Int] {
            if let cached = wordCache[word] { return cached }
            let wordIDs = model.encode(word)
            wordCache[word] = wordIDs
            return wordIDs
        }

        var ids = addSpecialTokens ? template.prefix : []
        let input = Array(text.unicodeScalars)
        for segment in rawAddedTokens.split(input) {
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let range):
                let normalized = normalizer.normalize(Array(input[range]))
                for inner in normalizedAddedTokens.split(normalized) {
                    switch inner {
                    case .token(let id):
                        ids.append(id)
                    case .text(let innerRange):
                        let atInputStart = range.lowerBound == 0 && innerRange.lowerBound == 0
                        for word in preTokenizer.words(Array(normalized[innerRange]), atInputStart: atInputStart) {
                            ids += encodeWord(word)
                        }
                    }
                }
            }
        }
        if addSpecialTokens { ids += template.suffix }
        return ids
    }

    /// The text of `ids`. Ids that are no token are skipped, and so are special tokens when
    /// `skipSpecialTokens`. Same result as feeding the ids one at a time to an `IncrementalDetokenizer`.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        var detokenizer = IncrementalDetokenizer(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
        return ids.map { detokenizer.append($0) }.joined() + detokenizer.finish()
    }

    /// The id of a token written as in tokenizer.json (`"Ġthe"`, `"▁the"`, `"<|eot_id|>"`), if there is one.
    public func id(forToken token: String) -> Int? {
        let scalars = Array(token.unicodeScalars)
        return addedTokenIDs[scalars] ?? model.vocabulary[scalars]
    }

    /// The text `id` decodes from, or nil when it is no token or a special token being skipped.
    func decodableText(_ id: Int, skipSpecialTokens: Bool) -> [Unicode.Scalar]? {
        if skipSpecialTokens && specialTokenIDs.contains(id) { return nil }
        return tokenTexts[id]
    }
}

/// tokenizer.json. The small, varied sections are kept as JSON; `model` is decoded directly.
private struct TokenizerFile: Decodable {
    let addedTokens: JSONField
    let normalizer: JSONField
    let preTokenizer: JSONField
    let postProcessor: JSONField
    let decoder: JSONField
    let model: BPEModelFile

    private enum CodingKeys: String, CodingKey {
        case addedTokens = "added_tokens"
        case normalizer
        case preTokenizer = "pre_tokenizer"
        case postProcessor = "post_processor"
        case decoder
        case model
    }

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        func section(_ key: CodingKeys) throws -> JSONField {
            JSONField(value: try container.decodeIfPresent(JSONValue.self, forKey: key) ?? .null,
                      file: "tokenizer.json", path: key.rawValue)
        }
        addedTokens = try section(.addedTokens)
        normalizer = try section(.normalizer)
        preTokenizer = try section(.preTokenizer)
        postProcessor = try section(.postProcessor)
        self.decoder = try section(.decoder)
        model = try container.decode(BPEModelFile.self, forKey: .model)
    }
}

/// A token named in tokenizer_config.json: `"<s>"`, `{"content": "<s>", ...}`, or null.
private func namedTokenContent(_ field: JSONField) throws -> String? {
    if case .object = field.value { return try field["content"].string() }
    return try field.optionalString()
}

/// The id `add_bos_token`/`add_eos_token` asks for, which the config must name.
private func required(_ id: Int?, _ config: JSONField, _ kind: String) throws -> Int {
    guard let id else { throw config["add_\(kind)_token"].invalid("is true but \(kind)_token is not set") }
    return id
}

/// generation_config.json `eos_token_id`: an id, a list of ids, or null.
private func generationEOS(_ generation: JSONField) throws -> [Int] {
    let field = generation["eos_token_id"]
    if case .array = field.value { return try field.array().map { try $0.int() } }
    return try field.optionalInt().map { [$0] } ?? []
}

/// `chat_template`: a template (named "default"), a list of `{"name", "template"}`, or null.
private func namedChatTemplates(_ field: JSONField) throws -> [String: String] {
    guard case .array = field.value else { return try field.optionalString().map { ["default": $0] } ?? [:] }
    var templates: [String: String] = [:]
    for entry in try field.array() { templates[try entry["name"].string()] = try entry["template"].string() }
    return templates
}

/// The whole of the regular file at `path` (symbolic links followed). A directory, FIFO or device there is refused
/// before anything reads it (O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever).
private func readRegularFile(_ path: String) throws -> Data {
    let descriptor = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard descriptor >= 0 else { throw TokenizerError.missingFile(path: path) }
    defer { close(descriptor) }
    var status = stat()
    guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
        throw TokenizerError.notRegularFile(path: path)
    }
    var data = Data()
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count >= 0 else { throw TokenizerError.invalidJSON(file: path, detail: "cannot be read (errno \(errno))") }
        if count == 0 { return data }
        data.append(contentsOf: chunk[..<count])
    }
}
