/// tokenizer.json `pre_tokenizer`: splits normalized text into the words BPE encodes one at a time, and for
/// byte-level models spells them in byte characters. Supported: `Split` with the GPT-2 or Llama-3 regex
/// (behavior Isolated), `ByteLevel`, `Metaspace`, `Digits` (SmolLM2), and a `Sequence` of those.
struct PreTokenizer: Sendable {
    private enum Step: Sendable {
        /// Llama-3: the regex's matches become the words.
        case split(WordPattern)
        /// Optionally " " before the text, optionally the GPT-2 split, then each word spelled in byte characters.
        case byteLevel(addPrefixSpace: Bool, pattern: WordPattern?)
        /// Spaces become `replacement`, which may also be put in front; with `split`, each one starts a word.
        case metaspace(replacement: Unicode.Scalar, prepend: PrependScheme, split: Bool)
        /// Digits apart from the rest: each one its own word (`individual_digits`), else each run of them.
        case digits(individually: Bool)
    }

    private struct Piece {
        var text: [Unicode.Scalar]
        /// Whether the piece starts the whole input (not after an added token, not a later word).
        var atInputStart: Bool
    }

    private let steps: [Step]

    /// `field` is tokenizer.json's `pre_tokenizer`; `null` keeps the text as one word.
    init(_ field: JSONField) throws {
        guard !field.isNull else {
            steps = []
            return
        }
        let list = try field["type"].string() == "Sequence" ? try field["pretokenizers"].array() : [field]
        steps = try list.map { step in
            switch try step["type"].string() {
            case "Split":
                let pattern = step["pattern"]
                guard let regex = try pattern["Regex"].optionalString(), let wordPattern = WordPattern(regex: regex)
                else { throw pattern.unsupported(supported: "{\"Regex\": the GPT-2 or the Llama-3 pattern}") }
                guard try step["behavior"].string() == "Isolated" else {
                    throw step["behavior"].unsupported(supported: "\"Isolated\"")
                }
                guard try !step["invert"].bool(default: false) else {
                    throw step["invert"].unsupported(supported: "false")
                }
                return .split(wordPattern)
            case "ByteLevel":
                return .byteLevel(addPrefixSpace: try step["add_prefix_space"].bool(default: true),
                                  pattern: try step["use_regex"].bool(default: true) ? .gpt2 : nil)
            case "Metaspace":
                return .metaspace(replacement: try step["replacement"].scalar(), prepend: try PrependScheme(step),
                                  split: try step["split"].bool(default: true))
            case "Digits":
                return .digits(individually: try step["individual_digits"].bool(default: false))
            default:
                throw step["type"].unsupported(supported: "Split, ByteLevel, Metaspace, Digits, or a Sequence of those")
            }
        }
    }

    /// The words of `text`, a stretch of normalized input between added tokens. `atInputStart` says whether
    /// the stretch begins the input: Metaspace's "first" prepend scheme only adds its "▁" there.
    func words(_ text: [Unicode.Scalar], atInputStart: Bool) -> [[Unicode.Scalar]] {
        var pieces = text.isEmpty ? [] : [Piece(text: text, atInputStart: atInputStart)]
        for step in steps {
            pieces = pieces.flatMap { split($0, by: step) }
        }
        return pieces.map(\.text).filter { !$0.isEmpty }
    }

    private func split(_ piece: Piece, by step: Step) -> [Piece] {
        switch step {
        case .split(let pattern):
            return pieces(pattern.words(in: piece.text[...]).map(Array.init), from: piece)
        case .byteLevel(let addPrefixSpace, let pattern):
            var text = piece.text
            if addPrefixSpace && text.first != " " { text.insert(" ", at: 0) }
            let words = pattern?.words(in: text[...]) ?? [text[...]]
            return pieces(words.map(ByteLevel.spell), from: piece)
        case .metaspace(let replacement, let prepend, let split):
            var text = piece.text.map { $0 == " " ? replacement : $0 }
            let prepends = prepend == .always || (prepend == .first && piece.atInputStart)
            if prepends && text.first != replacement { text.insert(replacement, at: 0) }
            guard split else { return [Piece(text: text, atInputStart: piece.atInputStart)] }
            // Each replacement starts a word ("MergedWithNext"): "▁a▁▁b" → "▁a", "▁", "▁b".
            var words: [[Unicode.Scalar]] = []
            for scalar in text {
                if scalar == replacement || words.isEmpty {
                    words.append([scalar])
                } else {
                    words[words.count - 1].append(scalar)
                }
            }
            return pieces(words, from: piece)
        case .digits(let individually):
            // The `tokenizers` library's Digits: Rust's `char::is_numeric` (categories Nd, Nl, No: "٣", "½", "²" too).
            var words: [[Unicode.Scalar]] = []
            var previousIsDigit: Bool?
            for scalar in piece.text {
                let isDigit = [.decimalNumber, .letterNumber, .otherNumber].contains(scalar.properties.generalCategory)
                if isDigit && individually || isDigit != previousIsDigit { words.append([]) }
                words[words.count - 1].append(scalar)
                previousIsDigit = isDigit
            }
            return pieces(words, from: piece)
        }
    }

    /// `words` as pieces of `piece`: only the first can start the input.
    private func pieces(_ words: [[Unicode.Scalar]], from piece: Piece) -> [Piece] {
        words.enumerated().map { Piece(text: $1, atInputStart: piece.atInputStart && $0 == 0) }
    }
}

/// Metaspace's `prepend_scheme` (older files: `add_prefix_space` true/false for "always"/"never").
enum PrependScheme: String, Sendable {
    case first, always, never

    init(_ metaspace: JSONField) throws {
        if let name = try metaspace["prepend_scheme"].optionalString() {
            guard let scheme = PrependScheme(rawValue: name) else {
                throw metaspace["prepend_scheme"].unsupported(supported: "\"first\", \"always\", \"never\"")
            }
            self = scheme
        } else {
            self = try metaspace["add_prefix_space"].bool(default: true) ? .always : .never
        }
    }
}
