#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaTokenizer
import TestSupport
import Testing

struct BPEOptionsTests {
    /// Without byte fallback, characters outside the vocabulary become the unknown token; `fuse_unk` makes a
    /// run of them one token (the golden tests cover `fuse_unk: true` only).
    @Test func fuseUnknown() throws {
        let json = String(decoding: try Fixtures.data("tokenizers/sentencepiece-unk/tokenizer.json"), as: UTF8.self)
        let unfusedJSON = json.replacing(#""fuse_unk": true"#, with: #""fuse_unk": false"#)
        try #require(unfusedJSON != json)
        let fused = try Tokenizer(tokenizerJSON: Data(json.utf8), tokenizerConfig: nil, generationConfig: nil)
        let unfused = try Tokenizer(tokenizerJSON: Data(unfusedJSON.utf8), tokenizerConfig: nil, generationConfig: nil)
        let space = try #require(fused.id(forToken: "▁"))
        let unknown = try #require(fused.id(forToken: "<unk>"))
        #expect(fused.encode("한국", addSpecialTokens: false) == [space, unknown])
        #expect(unfused.encode("한국", addSpecialTokens: false) == [space, unknown, unknown])
    }
}
