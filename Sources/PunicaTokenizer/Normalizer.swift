/// tokenizer.json `normalizer`: rewrites applied to text before it is split into words. Supported are the
/// steps Llama-2-style files use, `Prepend` and `Replace` with a literal pattern, and Qwen2's `NFC`, alone or in a
/// `Sequence` (sequences may nest, or be empty).
struct Normalizer: Sendable {
    private enum Step: Sendable {
        /// Put `prefix` before non-empty text (Llama-2: "▁", so the first word reads like every other).
        case prepend([Unicode.Scalar])
        case replace(pattern: [Unicode.Scalar], replacement: [Unicode.Scalar])
        /// Unicode canonical composition (NFC): decomposed sequences become their precomposed scalars, combining
        /// marks are put in canonical order.
        case nfc
    }

    private let steps: [Step]

    /// `field` is tokenizer.json's `normalizer`; `null` normalizes nothing.
    init(_ field: JSONField) throws {
        guard !field.isNull else {
            steps = []
            return
        }
        steps = try Self.steps(field)
    }

    private static func steps(_ step: JSONField) throws -> [Step] {
        switch try step["type"].string() {
        case "Sequence":
            return try step["normalizers"].array().flatMap(steps)
        case "Prepend":
            return [.prepend(Array(try step["prepend"].string().unicodeScalars))]
        case "Replace":
            let (pattern, replacement) = try literalReplacement(step)
            return [.replace(pattern: pattern, replacement: replacement)]
        case "NFC":
            return [.nfc]
        default:
            throw step["type"].unsupported(supported: "Prepend, Replace, NFC, or a Sequence of those")
        }
    }

    func normalize(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        steps.reduce(text) { text, step in
            switch step {
            case .prepend(let prefix): return text.isEmpty ? text : prefix + text
            case .replace(let pattern, let replacement): return text.replacing(pattern, with: replacement)
            case .nfc: return Self.nfc(text)
            }
        }
    }

    /// The standard library's NFC (the one String comparison uses). Foundation's
    /// `precomposedStringWithCanonicalMapping` is not used: on Linux it leaves a Hangul LV syllable followed by a
    /// trailing jamo (가 + ᆨ) uncomposed, where NFC gives one syllable (각).
    private static func nfc(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var string = ""
        string.unicodeScalars.append(contentsOf: text)
        return Array(String(decoding: string._nfcCodeUnits, as: UTF8.self).unicodeScalars)
    }
}

/// The pattern and content of a `Replace` step (normalizer or decoder); only literal patterns are supported.
func literalReplacement(_ step: JSONField) throws -> (pattern: [Unicode.Scalar], replacement: [Unicode.Scalar]) {
    let pattern = step["pattern"]
    guard pattern["Regex"].isNull else { throw pattern.unsupported(supported: "{\"String\": ...}") }
    let literal = Array(try pattern["String"].string().unicodeScalars)
    guard !literal.isEmpty else { throw pattern["String"].invalid("must not be empty") }
    return (literal, Array(try step["content"].string().unicodeScalars))
}
