/// Streaming detokenization for one sequence: feed generated ids one at a time and get text deltas.
///
/// The deltas concatenated, followed by `finish()`, equal `tokenizer.decode(ids)` exactly, and a delta never
/// ends in part of a character: text a later token could still change is held back until it is settled —
/// an unfinished UTF-8 character (byte-level tokens and byte-fallback tokens can split one), or a run of
/// byte-fallback tokens (decoded as a whole). A SentencePiece leading space is stripped only at the very
/// start of the sequence.
///
/// Use one detokenizer per sequence and feed it the generated ids: its text is then `decode(generatedIDs)`
/// (for a SentencePiece model, without the space the first generated token starts with, as in transformers).
public struct IncrementalDetokenizer: Sendable {
    private let tokenizer: Tokenizer
    private let skipSpecialTokens: Bool
    private var stream: DecodingStream

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        stream = DecodingStream(tokenizer.decoder)
    }

    /// The text `id` settles; often "" (a skipped special token, or bytes of an unfinished character).
    public mutating func append(_ id: Int) -> String {
        guard let text = tokenizer.decodableText(id, skipSpecialTokens: skipSpecialTokens) else { return "" }
        return stream.append(text)
    }

    /// Call when the sequence ends: whatever is still held, as `decode` renders the end of a sequence
    /// (U+FFFD for the bytes of an unfinished character).
    public mutating func finish() -> String {
        stream.finish()
    }
}
