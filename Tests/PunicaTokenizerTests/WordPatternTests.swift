@testable import PunicaTokenizer
import Testing

/// The hand-written regex scanners against the `tokenizers` library's Split pre-tokenizer (expected words
/// recorded from `pre_tokenizers.Split(Regex(pattern), "isolated").pre_tokenize_str(text)`).
struct WordPatternTests {
    static let gpt2Cases: [(String, [String])] = [
        ("Hello  world's 'S  ", ["Hello", " ", " world", "'s", " '", "S", "  "]),
        ("x'ſ y'S z'Ll", ["x", "'", "ſ", " y", "'", "S", " z", "'", "Ll"]),
        ("  \r\n \n  x", ["  \r\n \n ", " x"]),
        ("a  \n\n b ", ["a", "  \n\n", " b", " "]),
        ("12345 ١٢٣٤", ["12345", " ١٢٣٤"]),
        ("\t\tx", ["\t", "\t", "x"]),
        ("don't!!\n\n?", ["don", "'t", "!!", "\n", "\n", "?"]),
        ("e\u{301}t\u{e9} \u{a0}x", ["e", "\u{301}", "t\u{e9}", " ", "\u{a0}", "x"]),
        ("(a)+[b]", ["(", "a", ")+[", "b", "]"]),
        ("a.\r\nb", ["a", ".", "\r", "\n", "b"]),
    ]

    static let llama3Cases: [(String, [String])] = [
        ("Hello  world's 'S  ", ["Hello", " ", " world", "'s", " '", "S", "  "]),
        ("x'ſ y'S z'Ll", ["x", "'ſ", " y", "'S", " z", "'Ll"]),
        ("  \r\n \n  x", ["  \r\n \n", " ", " x"]),
        ("a  \n\n b ", ["a", "  \n\n", " b", " "]),
        ("12345 ١٢٣٤", ["123", "45", " ", "١٢٣", "٤"]),
        ("\t\tx", ["\t", "\tx"]),
        ("don't!!\n\n?", ["don", "'t", "!!\n\n", "?"]),
        ("e\u{301}t\u{e9} \u{a0}x", ["e", "\u{301}t\u{e9}", " ", "\u{a0}x"]),
        ("(a)+[b]", ["(a", ")+[", "b", "]"]),
        ("a.\r\nb", ["a", ".\r\n", "b"]),
    ]

    static let qwen2Cases: [(String, [String])] = [
        ("Hello  world's 'S  ", ["Hello", " ", " world", "'s", " '", "S", "  "]),
        ("x'ſ y'S z'Ll", ["x", "'ſ", " y", "'S", " z", "'Ll"]),
        ("  \r\n \n  x", ["  \r\n \n", " ", " x"]),
        ("12345 ١٢٣٤", ["1", "2", "3", "4", "5", " ", "١", "٢", "٣", "٤"]),
        ("don't!!\n\n?", ["don", "'t", "!!\n\n", "?"]),
        ("e\u{301}t\u{e9} \u{a0}x", ["e", "\u{301}t\u{e9}", " ", "\u{a0}x"]),
        ("v2.10 x1y22", ["v", "2", ".", "1", "0", " x", "1", "y", "2", "2"]),
        ("(a)+[b]", ["(a", ")+[", "b", "]"]),
    ]

    @Test(arguments: gpt2Cases)
    func gpt2(text: String, expected: [String]) {
        #expect(words(.gpt2, text) == expected.map(escaped))
    }

    @Test(arguments: llama3Cases)
    func llama3(text: String, expected: [String]) {
        #expect(words(.llama3, text) == expected.map(escaped))
    }

    @Test(arguments: qwen2Cases)
    func qwen2(text: String, expected: [String]) {
        #expect(words(.qwen2, text) == expected.map(escaped))
    }

    @Test func recognizesOnlyTheExactPatterns() {
        #expect(WordPattern(regex: WordPattern.gpt2Regex) == .gpt2)
        #expect(WordPattern(regex: WordPattern.llama3Regex) == .llama3)
        // Qwen2's tokenizer.json spells it so.
        let qwen2 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        #expect(WordPattern(regex: qwen2) == .qwen2)
        #expect(WordPattern(regex: WordPattern.llama3Regex.replacing("{1,3}", with: "{1,2}")) == nil)
    }

    private func words(_ pattern: WordPattern, _ text: String) -> [String] {
        pattern.words(in: Array(text.unicodeScalars)[...]).map { escaped(String(scalars: $0)) }
    }
}
