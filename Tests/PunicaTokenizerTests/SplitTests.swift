@testable import PunicaTokenizer
import TestSupport
import Testing

/// The Split pre-tokenizer against the `tokenizers` library: split-words.json (scripts/make_tokenizer_fixtures.py)
/// holds the library's words for a literal " ", a literal "--" and the Llama-3 regex, each with every behavior and
/// invert false and true, on texts with runs of delimiters, leading and trailing ones, and none.
struct SplitTests {
    @Test func wordsMatchTheLibrary() throws {
        let file = try decodeJSONField(from: Fixtures.data("tokenizers/split-words.json"), file: "split-words.json")
        let texts = try file["texts"].array().map { try $0.string() }
        let cases = try file["cases"].array()
        #expect(cases.count == 31)
        for golden in cases {
            let preTokenizer = try PreTokenizer(golden["pre_tokenizer"])
            let expected = try golden["words"].array().map { try $0.array().map { try escaped($0.string()) } }
            let actual = texts.map { text in
                preTokenizer.words(Array(text.unicodeScalars), atInputStart: true)
                    .map { escaped(String(String.UnicodeScalarView($0))) }
            }
            #expect(actual == expected, "\(golden["pre_tokenizer"].value)")
        }
    }
}
