/// tokenizer.json `decoder`: how token texts turn back into text.
///
/// Supported: `ByteLevel` (GPT-2, Llama-3); and SentencePiece-style steps in the order Llama-family files use
/// them — per-token `Replace` / `Strip` / `Metaspace`, then `ByteFallback`, then `Fuse`, then a `Strip` of
/// the joined text's start (Llama-2: Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)) — as a
/// `Sequence` or one step alone. Other orders would rewrite text across token boundaries and are rejected.
enum TokenDecoder: Sendable {
    /// Every token spells bytes (see `ByteLevel`); the bytes of all tokens are one UTF-8 text, with U+FFFD
    /// for invalid bytes.
    case byteLevel
    case pieces(PieceDecoder)

    private static let supported = "ByteLevel alone, or Replace/Strip/Metaspace, then ByteFallback, then Fuse, "
        + "then Strip with stop 0"

    init(_ field: JSONField) throws {
        guard !field.isNull else { throw field.unsupported(supported: Self.supported) }
        let steps = try field["type"].string() == "Sequence" ? try field["decoders"].array() : [field]
        if steps.count == 1, try steps[0]["type"].string() == "ByteLevel" {
            self = .byteLevel
            return
        }
        var decoder = PieceDecoder()
        var fused = false
        for step in steps {
            let perToken = !fused && !decoder.byteFallback
            switch try step["type"].string() {
            case "Replace" where perToken:
                let (pattern, replacement) = try literalReplacement(step)
                decoder.rewrites.append(.replace(pattern: pattern, replacement: replacement))
            case "Strip" where perToken:
                decoder.rewrites.append(.strip(try Strip(step)))
            case "Metaspace" where perToken:
                decoder.rewrites.append(.metaspace(replacement: try step["replacement"].scalar(),
                                                   prepend: try PrependScheme(step)))
            case "ByteFallback" where perToken:
                decoder.byteFallback = true
            case "Fuse" where !fused:
                fused = true
            case "Strip" where fused && decoder.leadingStrip == nil:
                let strip = try Strip(step)
                guard strip.stop == 0 else { throw step["stop"].unsupported(supported: "0 after Fuse") }
                decoder.leadingStrip = strip
            default:
                throw step["type"].unsupported(supported: Self.supported)
            }
        }
        self = .pieces(decoder)
    }
}

/// SentencePiece-style decoding: rewrite each token's text, read `<0xNN>` tokens as bytes, join, strip the
/// start of the joined text.
struct PieceDecoder: Sendable {
    var rewrites: [TokenRewrite] = []
    /// `<0xNN>` tokens are bytes; a run of them reads as UTF-8, or as one U+FFFD per byte if invalid.
    var byteFallback = false
    /// Applied to the start of the whole text (a `Strip` after `Fuse`).
    var leadingStrip: Strip?
}

enum TokenRewrite: Sendable {
    case replace(pattern: [Unicode.Scalar], replacement: [Unicode.Scalar])
    case strip(Strip)
    /// `replacement` reads as a space; on the first token every one is dropped (it stood for the space the
    /// pre-tokenizer put in front), unless the prepend scheme is "never".
    case metaspace(replacement: Unicode.Scalar, prepend: PrependScheme)

    func apply(to token: [Unicode.Scalar], isFirstToken: Bool) -> [Unicode.Scalar] {
        switch self {
        case .replace(let pattern, let replacement):
            return token.replacing(pattern, with: replacement)
        case .strip(let strip):
            return strip.apply(to: token)
        case .metaspace(let replacement, let prepend):
            if isFirstToken && prepend != .never { return token.filter { $0 != replacement } }
            return token.map { $0 == replacement ? " " : $0 }
        }
    }
}

/// The `Strip` decoder: removes up to `start` leading and `stop` trailing `content` characters.
struct Strip: Sendable {
    let content: Unicode.Scalar
    let start: Int
    let stop: Int

    init(_ step: JSONField) throws {
        content = try step["content"].scalar()
        start = try step["start"].int()
        stop = try step["stop"].int()
    }

    func apply(to token: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var lower = 0
        while lower < min(start, token.count) && token[lower] == content { lower += 1 }
        var upper = token.count
        while token.count - upper < stop && upper > lower && token[upper - 1] == content { upper -= 1 }
        return Array(token[lower..<upper])
    }
}

/// Renders token texts one at a time. The concatenated output is exactly what `tokenizers` renders for the
/// whole sequence at once, and no output is ever taken back: text a later token could still change is held
/// until it is settled. Byte-level: bytes that end in an unfinished UTF-8 character. SentencePiece-style: a
/// run of byte-fallback tokens (the run is valid or invalid UTF-8 as a whole), and the leading strip, which
/// applies only at the very start of the sequence.
struct DecodingStream: Sendable {
    let decoder: TokenDecoder
    private var tokenCount = 0
    private var heldBytes: [UInt8] = []
    /// How many more leading characters the decoder's leading strip may still remove.
    private var leadingStripLeft: Int

    init(_ decoder: TokenDecoder) {
        self.decoder = decoder
        if case .pieces(let pieces) = decoder, let strip = pieces.leadingStrip {
            leadingStripLeft = strip.start
        } else {
            leadingStripLeft = 0
        }
    }

    /// The text that `token` settles (often empty, never a partial character).
    mutating func append(_ token: [Unicode.Scalar]) -> String {
        defer { tokenCount += 1 }
        switch decoder {
        case .byteLevel:
            heldBytes += ByteLevel.bytes(spelledBy: token)
            let text = String(decoding: heldBytes, as: UTF8.self)
            // A trailing U+FFFD may be a character whose remaining bytes are still to come: hold it all. Text
            // that does not end in one ends on a character boundary, so it decodes the same whatever follows.
            guard text.unicodeScalars.last != "\u{FFFD}" else { return "" }
            heldBytes.removeAll()
            return text
        case .pieces(let pieces):
            let isFirstToken = tokenCount == 0
            let text = pieces.rewrites.reduce(token) { $1.apply(to: $0, isFirstToken: isFirstToken) }
            if pieces.byteFallback, let byte = fallbackByte(text) {
                heldBytes.append(byte)
                return ""
            }
            return strippingLeading(takeByteRun() + text, pieces.leadingStrip)
        }
    }

    /// Whatever is still held, rendered as the end of the sequence (U+FFFD for incomplete bytes).
    mutating func finish() -> String {
        switch decoder {
        case .byteLevel:
            defer { heldBytes.removeAll() }
            return String(decoding: heldBytes, as: UTF8.self)
        case .pieces(let pieces):
            return strippingLeading(takeByteRun(), pieces.leadingStrip)
        }
    }

    /// The held run of byte-fallback bytes as text: valid UTF-8 as is, otherwise one U+FFFD per byte.
    private mutating func takeByteRun() -> [Unicode.Scalar] {
        guard !heldBytes.isEmpty else { return [] }
        defer { heldBytes.removeAll() }
        let text = String(decoding: heldBytes, as: UTF8.self)
        return text.utf8.elementsEqual(heldBytes)
            ? Array(text.unicodeScalars)
            : Array(repeating: "\u{FFFD}", count: heldBytes.count)
    }

    private mutating func strippingLeading(_ text: [Unicode.Scalar], _ strip: Strip?) -> String {
        var start = 0
        if let strip {
            while leadingStripLeft > 0 && start < text.count && text[start] == strip.content {
                start += 1
                leadingStripLeft -= 1
            }
            if start < text.count { leadingStripLeft = 0 }
        }
        return String(scalars: text[start...])
    }
}

/// NN of a `<0xNN>` byte-fallback token.
private func fallbackByte(_ token: [Unicode.Scalar]) -> UInt8? {
    guard token.count == 6, token.starts(with: "<0x".unicodeScalars), token[5] == ">" else { return nil }
    return UInt8(String(scalars: token[3..<5]), radix: 16)
}
