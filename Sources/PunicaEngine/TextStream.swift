import PunicaTokenizer

/// A request's generated text as it streams: incremental detokenization, the text cut before the first stop string,
/// and any tail that could still become a stop string held back until it cannot.
struct TextStream {
    private var detokenizer: IncrementalDetokenizer
    private let stops: [String]
    /// Everything generated so far (cut at a stop string once one appears).
    private(set) var text = ""
    /// UTF-8 bytes of `text` already released.
    private var released = 0

    init(tokenizer: Tokenizer, stops: [String], skipSpecialTokens: Bool) {
        detokenizer = IncrementalDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skipSpecialTokens)
        self.stops = stops
    }

    /// Adds a token; returns the text now safe to release and whether a stop string ended the text.
    mutating func append(_ token: Int) -> (delta: String, stopped: Bool) {
        text += detokenizer.append(token)
        if let stop = stops.compactMap({ text.firstRange(of: $0) }).min(by: { $0.lowerBound < $1.lowerBound }) {
            text = String(text[..<stop.lowerBound])
            return (releaseAll(), true)
        }
        let held = stops.map { stop in
            // The longest proper prefix of `stop` that `text` ends with.
            (1..<max(stop.count, 1)).reversed().first { text.hasSuffix(stop.prefix($0)) }.map { stop.prefix($0).utf8.count } ?? 0
        }.max() ?? 0
        return (release(upTo: text.utf8.count - held), false)
    }

    /// The end of the sequence: releases whatever was held back, including an unfinished character.
    mutating func finish() -> String {
        text += detokenizer.finish()
        return releaseAll()
    }

    private mutating func releaseAll() -> String { release(upTo: text.utf8.count) }

    private mutating func release(upTo end: Int) -> String {
        guard end > released else { return "" }
        let delta = String(decoding: Array(text.utf8)[released..<end], as: UTF8.self)
        released = end
        return delta
    }
}
