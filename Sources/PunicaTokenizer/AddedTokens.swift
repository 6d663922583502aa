/// An added token (tokenizer.json `added_tokens`, or a named special token of tokenizer_config.json): text
/// that is found in the input before BPE and maps straight to its id.
struct AddedToken: Sendable {
    let id: Int
    /// The content as written in the file, which `Tokenizer.id(forToken:)` looks up.
    let content: [Unicode.Scalar]
    /// What is matched, and the token's text when decoding: the content, passed through the normalizer for a
    /// `normalized` token (as `tokenizers` does), since such a token is matched in normalized text.
    let text: [Unicode.Scalar]
    /// Dropped by `decode(skipSpecialTokens: true)`.
    let special: Bool
    /// Only matched with no word character right before or after it.
    let singleWord: Bool
    /// Also takes the whitespace before it.
    let lstrip: Bool
    /// Also takes the whitespace after it.
    let rstrip: Bool
    /// Matched in normalized text, rather than in the raw input.
    let normalized: Bool

    /// `options` holds the flags as tokenizer.json writes them (`single_word`, `lstrip`, `rstrip`,
    /// `normalized`); missing ones take the `tokenizers` defaults.
    init(content: String, id: Int, special: Bool, options: JSONField, normalizer: Normalizer) throws {
        guard (0...Int(Int32.max)).contains(id) else { throw options["id"].invalid("must be in 0...\(Int32.max) (found \(id))") }
        self.id = id
        self.content = Array(content.unicodeScalars)
        guard !self.content.isEmpty else { throw options["content"].invalid("must not be empty") }
        self.special = special
        singleWord = try options["single_word"].bool(default: false)
        lstrip = try options["lstrip"].bool(default: false)
        rstrip = try options["rstrip"].bool(default: false)
        normalized = try options["normalized"].bool(default: !special)
        text = normalized ? normalizer.normalize(self.content) : self.content
    }
}

/// A stretch of text as `AddedTokenMatcher` splits it.
enum Segment {
    case text(Range<Int>)
    case token(id: Int)
}

/// Finds added tokens in text as `tokenizers` does: at the leftmost position where any token matches, the
/// longest token there. A `single_word` token with a word character beside it does not count (that stretch
/// stays text); `lstrip`/`rstrip` tokens take the whitespace before/after them, which then encodes to nothing.
struct AddedTokenMatcher: Sendable {
    /// Tokens by first scalar, longest first.
    private let tokensByFirstScalar: [Unicode.Scalar: [AddedToken]]

    init(_ tokens: [AddedToken]) {
        tokensByFirstScalar = Dictionary(grouping: tokens.filter { !$0.text.isEmpty }) { $0.text[0] }
            .mapValues { $0.sorted { $0.text.count > $1.text.count } }
    }

    func split(_ text: [Unicode.Scalar]) -> [Segment] {
        var segments: [Segment] = []
        var textStart = 0
        var position = 0
        while position < text.count {
            guard let token = tokensByFirstScalar[text[position]]?.first(where: {
                text[position...].starts(with: $0.text)
            }) else {
                position += 1
                continue
            }
            var start = position
            var end = position + token.text.count
            position = end
            if token.singleWord {
                let wordBefore = start > 0 && text[start - 1].isWordCharacter
                let wordAfter = end < text.count && text[end].isWordCharacter
                if wordBefore || wordAfter { continue }
            }
            if token.lstrip {
                start = max(textStart, (text[..<start].lastIndex { !$0.isWhitespace } ?? -1) + 1)
            }
            if token.rstrip {
                end = text[end...].firstIndex { !$0.isWhitespace } ?? text.count
                position = end
            }
            if textStart < start { segments.append(.text(textStart..<start)) }
            segments.append(.token(id: token.id))
            textStart = end
        }
        if textStart < text.count { segments.append(.text(textStart..<text.count)) }
        return segments
    }
}
