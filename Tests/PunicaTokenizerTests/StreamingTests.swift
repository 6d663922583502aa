import PunicaTokenizer
import TestSupport
import Testing

/// `IncrementalDetokenizer` where tokens split characters, and the SentencePiece leading space.
struct StreamingTests {
    /// "𓀀" is not in the fixtures' training text: SentencePiece-style encodes it as four byte-fallback tokens.
    @Test func characterSplitOverByteFallbackTokens() throws {
        let tokenizer = try Tokenizer(directory: Fixtures.path("tokenizers/sentencepiece"))
        let bytes = try ["<0xF0>", "<0x93>", "<0x80>", "<0x80>"].map { try #require(tokenizer.id(forToken: $0)) }
        let space = try #require(tokenizer.id(forToken: "▁"))
        #expect(tokenizer.encode("𓀀", addSpecialTokens: false) == [space] + bytes)

        var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
        // The run is held until a token that is not a byte ends it.
        #expect((bytes + [space]).map { detokenizer.append($0) } == ["", "", "", "", "𓀀 "])
        #expect(detokenizer.finish() == "")
    }

    @Test func characterSplitOverByteLevelTokens() throws {
        let tokenizer = try Tokenizer(directory: Fixtures.path("tokenizers/bytelevel"))
        let ids = tokenizer.encode("𓀀!", addSpecialTokens: false)
        #expect(ids.count >= 3, "the character should take more than one token")
        var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
        let deltas = ids.map { detokenizer.append($0) }
        #expect(deltas.dropLast().allSatisfy { $0.isEmpty || !$0.unicodeScalars.contains("\u{FFFD}") })
        #expect(deltas.joined() == "𓀀!")
    }

    /// A sequence that stops inside a character ends, like `decode`, with U+FFFD for the unfinished bytes.
    @Test func finishRendersUnfinishedCharacter() throws {
        for fixture in ["bytelevel", "sentencepiece"] {
            let tokenizer = try Tokenizer(directory: Fixtures.path("tokenizers/\(fixture)"))
            let ids = tokenizer.encode("a𓀀", addSpecialTokens: false).dropLast()
            var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
            let text = ids.map { detokenizer.append($0) }.joined() + detokenizer.finish()
            #expect(text == tokenizer.decode(Array(ids)))
            #expect(text.unicodeScalars.last == "\u{FFFD}", "\(fixture)")
        }
    }

    /// SentencePiece's leading space is dropped at the start of the sequence only, also after a skipped BOS.
    @Test func leadingSpaceStrippedOnlyAtStart() throws {
        let tokenizer = try Tokenizer(directory: Fixtures.path("tokenizers/sentencepiece"))
        let ids = tokenizer.encode("Hello world")
        #expect(ids.first == tokenizer.bosTokenID)
        var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
        let deltas = ids.map { detokenizer.append($0) }
        #expect(deltas.joined() == "Hello world")
        #expect(deltas.first { !$0.isEmpty }?.first == "H")
        var withSpecials = IncrementalDetokenizer(tokenizer: tokenizer, skipSpecialTokens: false)
        #expect(ids.map { withSpecials.append($0) }.joined() == "<s> Hello world")
    }
}
