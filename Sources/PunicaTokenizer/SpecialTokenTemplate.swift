/// The special tokens `encode(addSpecialTokens: true)` puts around the text (Llama: BOS before it).
struct SpecialTokenTemplate: Sendable {
    var prefix: [Int] = []
    var suffix: [Int] = []
}

extension SpecialTokenTemplate {
    /// From tokenizer.json `post_processor` (not null): `TemplateProcessing`'s `single` template, `ByteLevel`
    /// (which adds nothing), or a `Sequence` of those.
    init(postProcessor field: JSONField) throws {
        switch try field["type"].string() {
        case "TemplateProcessing":
            var sawText = false
            for item in try field["single"].array() {
                if !item["Sequence"].isNull {
                    guard !sawText, try item["Sequence"]["id"].string() == "A" else {
                        throw item.unsupported(supported: "one {\"Sequence\": {\"id\": \"A\"}}")
                    }
                    sawText = true
                } else {
                    let name = try item["SpecialToken"]["id"].string()
                    let special = field["special_tokens"][name]
                    guard !special.isNull else { throw item.invalid("names \"\(name)\", which is not in special_tokens") }
                    let ids = try special["ids"].array().map { try $0.int() }
                    if sawText { suffix += ids } else { prefix += ids }
                }
            }
            guard sawText else { throw field["single"].invalid("has no {\"Sequence\": {\"id\": \"A\"}}") }
        case "ByteLevel":
            break
        case "Sequence":
            // Each processor wraps the output of the ones before it.
            for processor in try field["processors"].array() {
                let inner = try SpecialTokenTemplate(postProcessor: processor)
                prefix = inner.prefix + prefix
                suffix += inner.suffix
            }
        default:
            throw field["type"].unsupported(supported: "TemplateProcessing, ByteLevel, or a Sequence of those")
        }
    }
}
