import Foundation
import PunicaTokenizer
import Testing
import TestSupport

/// Seeded mutation fuzzing of tokenizer.json, in memory: every mutated file either loads (and then encodes and
/// decodes without trapping) or is refused with a `TokenizerError`; no other error type leaks out.
struct FuzzTests {
    static let cases = Mutator.cases

    /// A fixture's tokenizer.json cut down to its first `keep` vocabulary ids (and the merges among them), so each
    /// case parses in microseconds.
    static func smallTokenizerJSON(_ fixture: String, keep: Int = 60) throws -> [UInt8] {
        var file = try JSONSerialization.jsonObject(with: Fixtures.data("tokenizers/\(fixture)/tokenizer.json")) as! [String: Any]
        var model = file["model"] as! [String: Any]
        let vocab = (model["vocab"] as! [String: Int]).filter { $0.value < keep }
        let merges = (model["merges"] as! [Any]).compactMap { merge -> [String]? in
            let pair = (merge as? [String]) ?? (merge as! String).split(separator: " ").map(String.init)
            return pair.count == 2 && vocab[pair[0]] != nil && vocab[pair[1]] != nil && vocab[pair[0] + pair[1]] != nil ? pair : nil
        }
        model["vocab"] = vocab
        model["merges"] = merges
        file["model"] = model
        return Array(try JSONSerialization.data(withJSONObject: file, options: [.sortedKeys]))
    }

    @Test func tokenizerJSON() throws {
        let fixtures = ["bytelevel", "sentencepiece"]
        let seeds = try fixtures.map { try Self.smallTokenizerJSON($0) }
        let configs = try fixtures.map { try Fixtures.data("tokenizers/\($0)/tokenizer_config.json") }
        var mutator = Mutator(seed: 5, dictionary: ["{\"id\":0,\"content\":\"a\"},", "\"a\":0,", "\"type\":\"BPE\",",
                                                    "\"byte_fallback\":true,", "\"unk_token\":\"<unk>\","])
        var (loaded, refused) = (0, 0)
        for index in 0..<Self.cases {
            let which = mutator.int(0..<2)
            let json = mutator.mutate(seeds[which])
            do {
                let tokenizer = try Tokenizer(tokenizerJSON: Data(json), tokenizerConfig: configs[which], generationConfig: nil)
                let ids = tokenizer.encode("Hello wörld, 123 <s> <|end_of_text|>\n")
                _ = tokenizer.decode(ids + [0, 7, tokenizer.vocabularySize, -1])
                loaded += 1
            } catch is TokenizerError {
                refused += 1
            } catch {
                Issue.record("case \(index) (PUNICA_FUZZ_SEED=\(Mutator.seedOffset)) threw \(type(of: error)), not a TokenizerError: \(error)")
            }
        }
        #expect(loaded > 50 && refused > 1000, "loaded \(loaded), refused \(refused)")
    }
}
