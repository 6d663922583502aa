/// The regexes byte-level Llama-family tokenizers split text into words with, as hand-written scanners over
/// Unicode scalars. At each position the regex's alternatives are tried in order and the first that matches
/// wins (leftmost-first alternation, as in Oniguruma, which the `tokenizers` library uses); each scanner
/// below returns what its alternative matches, greedy quantifiers and backtracking included.
/// Every scalar starts a match of some alternative, so the words cover the text with no gaps.
enum WordPattern: Sendable {
    /// GPT-2's pattern, also what the ByteLevel pre-tokenizer splits with when `use_regex` is true.
    case gpt2
    /// Llama-3's pattern: case-insensitive contractions, a separator may lead a word, at most three digits
    /// per word, symbols keep the line breaks that follow them.
    case llama3
    /// Qwen2's (and Qwen2.5's, Qwen3's) pattern: Llama-3's with one digit per word.
    case qwen2

    static let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"#
        + #" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Regex = llama3Regex.replacing(#"\p{N}{1,3}"#, with: #"\p{N}"#)

    /// The pattern whose regex source is exactly `regex`, if it is one of these.
    init?(regex: String) {
        switch regex {
        case Self.gpt2Regex: self = .gpt2
        case Self.llama3Regex: self = .llama3
        case Self.qwen2Regex: self = .qwen2
        default: return nil
        }
    }

    /// Splits `text` into the regex's consecutive matches.
    func words(in text: ArraySlice<Unicode.Scalar>) -> [ArraySlice<Unicode.Scalar>] {
        let scanner = Scanner(text: text)
        var words: [ArraySlice<Unicode.Scalar>] = []
        var start = text.startIndex
        while start < text.endIndex {
            guard let end = matchEnd(scanner, at: start) else {
                preconditionFailure("\(self): the last alternatives match every scalar")
            }
            words.append(text[start..<end])
            start = end
        }
        return words
    }

    private func matchEnd(_ scanner: Scanner, at start: Int) -> Int? {
        switch self {
        case .gpt2:
            return scanner.contraction(at: start, ignoringCase: false)           // 's|'t|'re|'ve|'m|'ll|'d
                ?? scanner.optionalSpaceThenRun(at: start, of: \.isLetter)      //  ?\p{L}+
                ?? scanner.optionalSpaceThenRun(at: start, of: \.isNumber)      //  ?\p{N}+
                ?? scanner.optionalSpaceThenRun(at: start, of: \.isSymbol)      //  ?[^\s\p{L}\p{N}]+
                ?? scanner.whitespaceNotBeforeNonWhitespace(at: start)          // \s+(?!\S)
                ?? scanner.oneOrMore(from: start, of: \.isWhitespace)           // \s+
        case .llama3, .qwen2:
            let digits = self == .llama3 ? 3 : 1
            return scanner.contraction(at: start, ignoringCase: true)            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
                ?? scanner.lettersAfterOptionalSeparator(at: start)             // [^\r\n\p{L}\p{N}]?\p{L}+
                ?? scanner.oneOrMore(from: start, of: \.isNumber).map { min($0, start + digits) } // \p{N}{1,3} or \p{N}
                ?? scanner.optionalSpaceThenRun(at: start, of: \.isSymbol)      //  ?[^\s\p{L}\p{N}]+[\r\n]*
                    .map { scanner.runEnd(from: $0, of: \.isLineBreak) }
                ?? scanner.whitespaceThroughLastLineBreak(at: start)            // \s*[\r\n]+
                ?? scanner.whitespaceNotBeforeNonWhitespace(at: start)          // \s+(?!\S)
                ?? scanner.oneOrMore(from: start, of: \.isWhitespace)           // \s+
        }
    }
}

private extension Unicode.Scalar {
    /// `[^\s\p{L}\p{N}]`: punctuation, symbols, marks, controls that are not whitespace.
    var isSymbol: Bool { !isWhitespace && !isLetter && !isNumber }
}

/// One alternative of a pattern each: returns where the alternative's match starting at `start` ends, or
/// `nil` when it does not match there.
private struct Scanner {
    let text: ArraySlice<Unicode.Scalar>

    private static let contractions = ["s", "t", "re", "ve", "m", "ll", "d"].map { Array($0.unicodeScalars) }

    private func scalar(at index: Int) -> Unicode.Scalar? {
        index < text.endIndex ? text[index] : nil
    }

    /// End of the (possibly empty) run of scalars from `start` that satisfy `predicate`.
    func runEnd(from start: Int, of predicate: (Unicode.Scalar) -> Bool) -> Int {
        text[start...].firstIndex { !predicate($0) } ?? text.endIndex
    }

    /// `X+`
    func oneOrMore(from start: Int, of predicate: (Unicode.Scalar) -> Bool) -> Int? {
        let end = runEnd(from: start, of: predicate)
        return end > start ? end : nil
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d`. Ignoring case follows Unicode case folding, under which "ſ" is an "s".
    func contraction(at start: Int, ignoringCase: Bool) -> Int? {
        guard scalar(at: start) == "'" else { return nil }
        let rest = text[(start + 1)...]
        for suffix in Self.contractions where rest.count >= suffix.count {
            let matches = zip(suffix, rest).allSatisfy { expected, actual in
                expected == actual
                    || (ignoringCase && expected.properties.uppercaseMapping == actual.properties.uppercaseMapping)
            }
            if matches { return start + 1 + suffix.count }
        }
        return nil
    }

    /// ` ?X+`. A space never satisfies the predicates used here, so there is nothing to backtrack into:
    /// the optional space is taken whenever present.
    func optionalSpaceThenRun(at start: Int, of predicate: (Unicode.Scalar) -> Bool) -> Int? {
        oneOrMore(from: scalar(at: start) == " " ? start + 1 : start, of: predicate)
    }

    /// `[^\r\n\p{L}\p{N}]?\p{L}+`: one optional separator (space, tab, punctuation...) before letters.
    func lettersAfterOptionalSeparator(at start: Int) -> Int? {
        if let first = scalar(at: start), !first.isLineBreak, !first.isLetter, !first.isNumber,
           let end = oneOrMore(from: start + 1, of: \.isLetter) {
            return end
        }
        return oneOrMore(from: start, of: \.isLetter)
    }

    /// `\s*[\r\n]+`: `\s*` backtracks to the last line break of the whitespace run, which `[\r\n]+` ends at.
    func whitespaceThroughLastLineBreak(at start: Int) -> Int? {
        let end = runEnd(from: start, of: \.isWhitespace)
        return text[start..<end].lastIndex(where: \.isLineBreak).map { $0 + 1 }
    }

    /// `\s+(?!\S)`: the whitespace run, less its last scalar when a non-whitespace scalar follows it (that
    /// scalar then starts the next word, e.g. the space of " word").
    func whitespaceNotBeforeNonWhitespace(at start: Int) -> Int? {
        let end = runEnd(from: start, of: \.isWhitespace)
        let matchEnd = end == text.endIndex ? end : end - 1
        return matchEnd > start ? matchEnd : nil
    }
}
