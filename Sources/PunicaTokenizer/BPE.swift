/// `model` of tokenizer.json, decoded with Codable directly rather than as `JSONValue`: the vocabulary and
/// merges are nearly all of the file (Llama-3: 128k tokens, 280k merges).
struct BPEModelFile: Decodable {
    let vocab: [String: Int]
    let merges: [MergeEntry]
    let unkToken: String?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let dropout: Double?
    let continuingSubwordPrefix: String?
    let endOfWordSuffix: String?

    private enum CodingKeys: String, CodingKey {
        case type, vocab, merges, dropout
        case unkToken = "unk_token"
        case fuseUnk = "fuse_unk"
        case byteFallback = "byte_fallback"
        case ignoreMerges = "ignore_merges"
        case continuingSubwordPrefix = "continuing_subword_prefix"
        case endOfWordSuffix = "end_of_word_suffix"
    }

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        // The type is checked first so that another model says so, rather than failing on its vocab's shape.
        let type = try container.decodeIfPresent(String.self, forKey: .type)
        guard type == "BPE" else {
            throw TokenizerError.unsupported(file: "tokenizer.json", field: "model.type",
                                             value: type.map { "\"\($0)\"" } ?? "null", supported: "BPE")
        }
        vocab = try container.decode([String: Int].self, forKey: .vocab)
        // `[["a", "b"], ...]` (tokenizers ≥ 0.20, which allows spaces in tokens) or `["a b", ...]`. The whole
        // list is tried in one format, then the other: a failed decode per entry would cost more than the rest.
        let pairs: [[String]]
        if let decoded = try? container.decode([[String]].self, forKey: .merges) {
            pairs = decoded
        } else {
            pairs = try container.decode([String].self, forKey: .merges).map {
                $0.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            }
        }
        merges = try pairs.enumerated().map { index, pair in
            guard pair.count == 2 else {
                throw TokenizerError.invalidValue(file: "tokenizer.json", field: "model.merges[\(index)]",
                                                  problem: "must be two tokens, \"a b\" or [\"a\", \"b\"]")
            }
            return MergeEntry(left: Array(pair[0].unicodeScalars), right: Array(pair[1].unicodeScalars))
        }
        unkToken = try container.decodeIfPresent(String.self, forKey: .unkToken)
        fuseUnk = try container.decodeIfPresent(Bool.self, forKey: .fuseUnk) ?? false
        byteFallback = try container.decodeIfPresent(Bool.self, forKey: .byteFallback) ?? false
        ignoreMerges = try container.decodeIfPresent(Bool.self, forKey: .ignoreMerges) ?? false
        dropout = try container.decodeIfPresent(Double.self, forKey: .dropout)
        continuingSubwordPrefix = try container.decodeIfPresent(String.self, forKey: .continuingSubwordPrefix)
        endOfWordSuffix = try container.decodeIfPresent(String.self, forKey: .endOfWordSuffix)
    }
}

/// One entry of `model.merges`: two tokens whose concatenation is also a token.
struct MergeEntry {
    let left: [Unicode.Scalar]
    let right: [Unicode.Scalar]
}

/// The BPE model. A word starts as one token per Unicode scalar (or its `<0xNN>` byte tokens, or the unknown
/// token, when the scalar is not in the vocabulary); then the adjacent pair with the lowest merge rank is
/// merged, leftmost first on ties, until no listed merge applies.
struct BPEModel: Sendable {
    /// The model's vocabulary (added tokens are separate).
    let vocabulary: [[Unicode.Scalar]: Int]
    /// The single-scalar tokens: where every word starts.
    private let scalarIDs: [Unicode.Scalar: Int]
    private let merges: [Pair: Merge]
    /// The `<0xNN>` token of each byte when `byte_fallback` is on; empty when it is off.
    private let byteFallbackIDs: [Int?]
    private let unknownID: Int?
    private let fuseUnknown: Bool
    private let ignoreMerges: Bool

    private struct Pair: Hashable {
        let left: Int
        let right: Int
    }

    private struct Merge {
        let rank: Int
        let mergedID: Int
    }

    init(_ file: BPEModelFile) throws {
        func unsupported(_ field: String, _ value: String) -> TokenizerError {
            .unsupported(file: "tokenizer.json", field: "model.\(field)", value: value, supported: "null")
        }
        if let dropout = file.dropout, dropout != 0 { throw unsupported("dropout", String(dropout)) }
        // An empty prefix or suffix (as transformers writes SmolLM2's) adds nothing: the same as none.
        if let prefix = file.continuingSubwordPrefix, !prefix.isEmpty { throw unsupported("continuing_subword_prefix", "\"\(prefix)\"") }
        if let suffix = file.endOfWordSuffix, !suffix.isEmpty { throw unsupported("end_of_word_suffix", "\"\(suffix)\"") }

        // Every id once, in 0...Int32.max (ids travel as Int32): two tokens on one id would make decoding ambiguous.
        for (token, id) in file.vocab where !(0...Int(Int32.max)).contains(id) {
            throw TokenizerError.invalidValue(file: "tokenizer.json", field: "model.vocab",
                                              problem: "\"\(token)\" has id \(id), outside 0...\(Int32.max)")
        }
        if Set(file.vocab.values).count < file.vocab.count {
            // Only a broken file pays for sorting, which names the same two tokens every time.
            var tokenOfID: [Int: String] = [:]
            for (token, id) in file.vocab.sorted(by: { $0.key < $1.key }) {
                if let other = tokenOfID.updateValue(token, forKey: id) {
                    throw TokenizerError.invalidValue(file: "tokenizer.json", field: "model.vocab",
                                                      problem: "\"\(other)\" and \"\(token)\" both have id \(id)")
                }
            }
        }
        vocabulary = Dictionary(file.vocab.map { (Array($0.key.unicodeScalars), $0.value) }) { first, _ in first }
        var scalarIDs: [Unicode.Scalar: Int] = [:]
        for (token, id) in vocabulary where token.count == 1 { scalarIDs[token[0]] = id }
        self.scalarIDs = scalarIDs

        var merges: [Pair: Merge] = [:]
        merges.reserveCapacity(file.merges.count)
        for (rank, merge) in file.merges.enumerated() {
            guard let left = vocabulary[merge.left], let right = vocabulary[merge.right],
                  let merged = vocabulary[merge.left + merge.right] else {
                let pair = "\"\(String(scalars: merge.left)) \(String(scalars: merge.right))\""
                throw TokenizerError.invalidValue(file: "tokenizer.json", field: "model.merges[\(rank)]",
                                                  problem: "\(pair) needs a token that is not in model.vocab")
            }
            merges[Pair(left: left, right: right)] = Merge(rank: rank, mergedID: merged)
        }
        self.merges = merges

        byteFallbackIDs = file.byteFallback
            ? (0...255).map { file.vocab["<0x" + hexByte(UInt8($0)) + ">"] }
            : []
        if let unkToken = file.unkToken {
            guard let id = file.vocab[unkToken] else {
                throw TokenizerError.invalidValue(file: "tokenizer.json", field: "model.unk_token",
                                                  problem: "\"\(unkToken)\" is not in model.vocab")
            }
            unknownID = id
        } else {
            unknownID = nil
        }
        fuseUnknown = file.fuseUnk
        ignoreMerges = file.ignoreMerges
    }

    /// The tokens of one pre-tokenized word.
    func encode(_ word: [Unicode.Scalar]) -> [Int] {
        if ignoreMerges, let id = vocabulary[word] { return [id] }
        var symbols: [Int] = []
        symbols.reserveCapacity(word.count)
        var previousWasUnknown = false
        // A scalar outside the vocabulary becomes its byte-fallback tokens, else the unknown token (one for a
        // whole run with fuse_unk), else nothing, as in `tokenizers`.
        for scalar in word {
            if let id = scalarIDs[scalar] {
                symbols.append(id)
                previousWasUnknown = false
            } else if let byteIDs = byteFallback(scalar) {
                symbols += byteIDs
                previousWasUnknown = false
            } else if let unknownID {
                if !(fuseUnknown && previousWasUnknown) { symbols.append(unknownID) }
                previousWasUnknown = true
            }
        }
        return merge(symbols)
    }

    /// The `<0xNN>` tokens of the scalar's UTF-8 bytes, if byte fallback is on and all of them exist.
    private func byteFallback(_ scalar: Unicode.Scalar) -> [Int]? {
        guard !byteFallbackIDs.isEmpty else { return nil }
        var ids: [Int] = []
        for byte in String(scalar).utf8 {
            guard let id = byteFallbackIDs[Int(byte)] else { return nil }
            ids.append(id)
        }
        return ids
    }

    /// Applies merges lowest rank first. Symbols form a linked list over their original positions, and a
    /// heap holds the candidate merges, so a long word (a whole paragraph when there is no pre-tokenizer)
    /// costs O(n log n), not O(n²).
    private func merge(_ initial: [Int]) -> [Int] {
        let count = initial.count
        guard count > 1 else { return initial }
        var symbols = initial
        var alive = [Bool](repeating: true, count: count)
        var previous = Array(-1..<(count - 1))  // -1: none
        var next = Array(1...count)             // count: none
        var candidates = MinHeap<Candidate>()

        func pushCandidate(_ left: Int, _ right: Int) {
            if let merge = merges[Pair(left: symbols[left], right: symbols[right])] {
                candidates.push(Candidate(rank: merge.rank, position: left, mergedID: merge.mergedID))
            }
        }

        for position in 0..<(count - 1) { pushCandidate(position, position + 1) }
        while let candidate = candidates.pop() {
            let left = candidate.position
            let right = next[left]
            // A candidate goes stale when a neighbour merged first; like `tokenizers`, keep it only while the
            // pair at its position still merges into the same token.
            guard alive[left], right < count,
                  merges[Pair(left: symbols[left], right: symbols[right])]?.mergedID == candidate.mergedID
            else { continue }
            symbols[left] = candidate.mergedID
            alive[right] = false
            next[left] = next[right]
            if next[left] < count { previous[next[left]] = left }
            if previous[left] >= 0 { pushCandidate(previous[left], left) }
            if next[left] < count { pushCandidate(left, next[left]) }
        }
        return symbols.indices.filter { alive[$0] }.map { symbols[$0] }
    }
}

/// "0A" for 10: the NN of a `<0xNN>` byte-fallback token.
private func hexByte(_ byte: UInt8) -> String {
    let digits = Array("0123456789ABCDEF")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
}

/// A merge of the symbol at `position` with the one after it; the heap pops the lowest rank first, then the
/// leftmost position.
private struct Candidate: Comparable {
    let rank: Int
    let position: Int
    let mergedID: Int

    static func < (a: Candidate, b: Candidate) -> Bool {
        (a.rank, a.position) < (b.rank, b.position)
    }
}

/// A binary min-heap.
private struct MinHeap<Element: Comparable> {
    private var items: [Element] = []

    mutating func push(_ item: Element) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < items.count && items[left] < items[smallest] { smallest = left }
            if right < items.count && items[right] < items[smallest] { smallest = right }
            if smallest == parent { return top }
            items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
