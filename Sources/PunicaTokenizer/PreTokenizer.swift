/// tokenizer.json `pre_tokenizer`: splits normalized text into the words BPE encodes one at a time, and for
/// byte-level models spells them in byte characters. Supported: `Split` on a literal string or on the GPT-2,
/// Llama-3 or Qwen2 regex (every behavior, `invert`), `ByteLevel`, `Metaspace`, `Digits` (SmolLM2), and a
/// `Sequence` of those.
struct PreTokenizer: Sendable {
    private enum Step: Sendable {
        /// Llama-3 and Qwen2: the regex's matches become the words; Gemma 3: each " " ends a word.
        case split(Split)
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
                return .split(try Split(step))
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
        case .split(let split):
            // A word starts the input only where it starts the piece (Removed may drop what came before).
            return split.words(in: piece.text).map {
                Piece(text: Array($0), atInputStart: piece.atInputStart && $0.startIndex == piece.text.startIndex)
            }
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

/// The `Split` pre-tokenizer, as the `tokenizers` library does it: the text is cut into the pattern's matches
/// and the stretches between them, `invert` swaps which is which, then `behavior` says what becomes of the
/// matches. Splitting "the-final--countdown" on "-":
///   Removed             "the" "final" "countdown"
///   Isolated            "the" "-" "final" "-" "-" "countdown"
///   MergedWithPrevious  "the-" "final-" "-" "countdown"    (a match joins the stretch before it)
///   MergedWithNext      "the" "-final" "-" "-countdown"    (a match joins the stretch after it)
///   Contiguous          "the" "-" "final" "--" "countdown" (adjacent matches are one word)
struct Split: Sendable {
    enum Pattern: Sendable {
        /// `{"String": ...}`: each occurrence, left to right, without overlaps.
        case literal([Unicode.Scalar])
        /// `{"Regex": ...}`, one WordPattern knows: its matches cover the text, so nothing lies between them.
        case regex(WordPattern)
    }

    enum Behavior: String, Sendable {
        case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
        case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"
    }

    let pattern: Pattern
    let behavior: Behavior
    let invert: Bool

    /// `step` is one `Split` object of tokenizer.json's `pre_tokenizer`.
    init(_ step: JSONField) throws {
        let field = step["pattern"]
        if let literal = try field["String"].optionalString(), !literal.isEmpty {
            pattern = .literal(Array(literal.unicodeScalars))
        } else if let regex = try field["Regex"].optionalString(), let wordPattern = WordPattern(regex: regex) {
            pattern = .regex(wordPattern)
        } else {
            throw field.unsupported(supported: "{\"String\": a non-empty string} or {\"Regex\": the GPT-2, Llama-3 or Qwen2 pattern}")
        }
        guard let behavior = Behavior(rawValue: try step["behavior"].string()) else {
            throw step["behavior"].unsupported(supported: "\"Removed\", \"Isolated\", \"MergedWithPrevious\", "
                                               + "\"MergedWithNext\", \"Contiguous\"")
        }
        self.behavior = behavior
        invert = try step["invert"].bool(default: false)
    }

    /// The words of `text`, as slices of it; none is empty.
    func words(in text: [Unicode.Scalar]) -> [ArraySlice<Unicode.Scalar>] {
        var words: [Range<Int>] = []
        var previousIsMatch = false
        for (range, found) in segments(text) {
            let isMatch = found != invert
            if behavior == .removed && isMatch { continue }
            // Whether this segment extends the last word. A match merges with a neighbouring stretch, not with a
            // neighbouring match (after `invert`, stretches may touch: each stays apart then).
            let joinsPrevious = switch behavior {
            case .removed, .isolated: false
            case .mergedWithPrevious: isMatch && !previousIsMatch   // a stretch, then the match after it
            case .mergedWithNext: !isMatch && previousIsMatch       // a match, then the stretch after it
            case .contiguous: isMatch == previousIsMatch            // touching matches, or touching stretches
            }
            if joinsPrevious, let last = words.last {
                words[words.count - 1] = last.lowerBound..<range.upperBound
            } else {
                words.append(range)
            }
            previousIsMatch = isMatch
        }
        return words.map { text[$0] }
    }

    /// `text` cut into consecutive non-empty ranges, each with whether it is a match of the pattern.
    private func segments(_ text: [Unicode.Scalar]) -> [(Range<Int>, isMatch: Bool)] {
        switch pattern {
        case .regex(let wordPattern):
            return wordPattern.words(in: text[...]).map { ($0.indices, true) }
        case .literal(let literal):
            var segments: [(Range<Int>, isMatch: Bool)] = []
            var stretchStart = 0
            var index = 0
            while index < text.count {
                guard text[index...].starts(with: literal) else {
                    index += 1
                    continue
                }
                if stretchStart < index { segments.append((stretchStart..<index, false)) }
                segments.append((index..<index + literal.count, true))
                index += literal.count
                stretchStart = index
            }
            if stretchStart < text.count { segments.append((stretchStart..<text.count, false)) }
            return segments
        }
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
