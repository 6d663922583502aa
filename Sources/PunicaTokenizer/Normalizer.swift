/// tokenizer.json `normalizer`: rewrites applied to text before it is split into words. Supported are the
/// steps Llama-2-style files use: `Prepend` and `Replace` with a literal pattern, alone or in a `Sequence`
/// (sequences may nest, or be empty).
struct Normalizer: Sendable {
    private enum Step: Sendable {
        /// Put `prefix` before non-empty text (Llama-2: "▁", so the first word reads like every other).
        case prepend([Unicode.Scalar])
        case replace(pattern: [Unicode.Scalar], replacement: [Unicode.Scalar])
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
        default:
            throw step["type"].unsupported(supported: "Prepend, Replace, or a Sequence of those")
        }
    }

    func normalize(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        steps.reduce(text) { text, step in
            switch step {
            case .prepend(let prefix): return text.isEmpty ? text : prefix + text
            case .replace(let pattern, let replacement): return text.replacing(pattern, with: replacement)
            }
        }
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
