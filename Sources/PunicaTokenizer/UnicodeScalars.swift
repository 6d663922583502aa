// Tokenizers work on Unicode scalars (Rust `char`s), not on Swift `Character`s (grapheme clusters): a
// vocabulary token can end in the middle of a cluster ("▁" + a combining mark), and Swift compares
// `String`s by canonical equivalence where vocabularies tell "é" from "e\u{301}". So text is handled as
// `[Unicode.Scalar]` from input to token lookup.
//
// Character classes come from the Swift runtime's Unicode tables (Unicode 17 in Swift 6.3). The `tokenizers`
// library's are older, so a character assigned since (e.g. CJK Extension J) can be split differently there.

extension Unicode.Scalar {
    /// `\p{L}`: general category Letter.
    var isLetter: Bool {
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    /// `\p{N}`: general category Number.
    var isNumber: Bool {
        switch properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// `\s` in the pre-tokenizer regexes and Rust's `char::is_whitespace`: the White_Space property.
    var isWhitespace: Bool { properties.isWhitespace }

    /// `\r` or `\n`.
    var isLineBreak: Bool { self == "\r" || self == "\n" }

    /// `\w` (Unicode, as the Rust regex crate defines it): what a `single_word` added token must not touch.
    var isWordCharacter: Bool {
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return properties.isAlphabetic || properties.isJoinControl
        }
    }
}

extension Array where Element == Unicode.Scalar {
    /// Every non-overlapping occurrence of `pattern`, leftmost first, replaced by `replacement`.
    func replacing(_ pattern: [Unicode.Scalar], with replacement: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard !pattern.isEmpty, count >= pattern.count else { return self }
        var result: [Unicode.Scalar] = []
        result.reserveCapacity(count)
        var index = startIndex
        while index < endIndex {
            if self[index...].starts(with: pattern) {
                result += replacement
                index += pattern.count
            } else {
                result.append(self[index])
                index += 1
            }
        }
        return result
    }
}

extension String {
    init<S: Sequence>(scalars: S) where S.Element == Unicode.Scalar {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        self = String(view)
    }
}
