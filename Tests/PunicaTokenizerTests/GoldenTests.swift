#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaTokenizer
import TestSupport
import Testing

/// Compares with transformers on the fixtures of scripts/make_tokenizer_fixtures.py (see its docstring for
/// what each directory exercises).
struct GoldenTests {
    static let fixtures = [
        "bytelevel", "bytelevel-gpt2", "bytelevel-smollm2", "sentencepiece", "sentencepiece-metaspace",
        "sentencepiece-metaspace-split", "sentencepiece-unk", "sentencepiece-nested", "bytelevel-qwen2", "sentencepiece-gemma",
        "sentencepiece-gemma3",
    ]

    @Test(arguments: fixtures)
    func encodeMatchesTransformers(fixture: String) throws {
        let (tokenizer, cases) = try load(fixture)
        for golden in cases {
            #expect(tokenizer.encode(golden.text) == golden.ids, "\(fixture): \(escaped(golden.text))")
        }
    }

    @Test(arguments: fixtures)
    func decodeMatchesTransformers(fixture: String) throws {
        let (tokenizer, cases) = try load(fixture)
        for golden in cases {
            #expect(escaped(tokenizer.decode(golden.ids)) == escaped(golden.decoded), "\(fixture)")
            #expect(escaped(tokenizer.decode(golden.ids, skipSpecialTokens: false))
                    == escaped(golden.decodedWithSpecials), "\(fixture)")
        }
    }

    @Test(arguments: fixtures)
    func incrementalDetokenizerMatchesDecode(fixture: String) throws {
        let (tokenizer, cases) = try load(fixture)
        for golden in cases {
            for skipSpecialTokens in [true, false] {
                var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skipSpecialTokens)
                let deltas = golden.ids.map { detokenizer.append($0) }
                let finished = detokenizer.finish()
                let expected = skipSpecialTokens ? golden.decoded : golden.decodedWithSpecials
                #expect(escaped(deltas.joined() + finished) == escaped(expected), "\(fixture)")
                // The golden texts are valid Unicode, so a replacement character could only be half a character.
                #expect(!deltas.contains { $0.unicodeScalars.contains("\u{FFFD}") },
                        "\(fixture): deltas \(deltas.map(escaped))")
            }
        }
    }

    private struct Case: Decodable {
        let text: String
        let ids: [Int]
        let decoded: String
        let decodedWithSpecials: String

        private enum CodingKeys: String, CodingKey {
            case text, ids, decoded
            case decodedWithSpecials = "decoded_with_specials"
        }
    }

    private struct Golden: Decodable {
        let cases: [Case]
    }

    private func load(_ fixture: String) throws -> (Tokenizer, [Case]) {
        let tokenizer = try Tokenizer(directory: Fixtures.path("tokenizers/\(fixture)"))
        let golden = try JSONDecoder().decode(Golden.self, from: try Fixtures.data("tokenizers/\(fixture)/golden.json"))
        #expect(golden.cases.count >= 40)
        return (tokenizer, golden.cases)
    }
}

/// `text` with non-ASCII and control scalars written as `\u{...}`. Comparing these compares scalar by scalar
/// (`String ==` would equate canonically equivalent texts), and a failure prints readably.
func escaped(_ text: String) -> String {
    text.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 ? String($0) : "\\u{\(String($0.value, radix: 16))}" }
        .joined()
}
