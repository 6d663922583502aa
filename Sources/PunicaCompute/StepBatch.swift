/// The paged KV layout, defined once for every backend.
///
/// The cache holds `pageCount` pages of `pageSize` token slots. A sequence's token at position `p` lives in slot
/// `blockTable[p / pageSize] * pageSize + p % pageSize`. Page 0 is never handed out, so a zero entry in a block
/// table never aliases a live page.
public struct PageLayout: Sendable, Equatable {
    public let pageSize: Int
    public let pageCount: Int

    public init(pageSize: Int, pageCount: Int) {
        precondition(pageSize > 0 && pageCount > 1, "a KV cache needs a positive page size and at least 2 pages")
        self.pageSize = pageSize
        self.pageCount = pageCount
    }

    public func pagesNeeded(forTokens tokens: Int) -> Int { (tokens + pageSize - 1) / pageSize }

    /// The cache slot of position `position` for a sequence with `blockTable`.
    @inline(__always)
    public func slot(ofPosition position: Int, blockTable: [Int32]) -> Int {
        Int(blockTable[position / pageSize]) * pageSize + position % pageSize
    }
}

/// Rows `rows` of a step share one adapter, resident in `slot` (Punica's SGMV segment).
public struct LoRASegment: Sendable, Equatable {
    public var rows: Range<Int>
    public var slot: Int

    public init(rows: Range<Int>, slot: Int) {
        self.rows = rows
        self.slot = slot
    }
}

extension Array where Element == LoRASegment {
    /// Adds `rows` for the adapter in `slot`, extending the last segment when it is the same adapter's and ends
    /// where `rows` begin, so each run of rows sharing an adapter stays one segment.
    public mutating func append(rows: Range<Int>, slot: Int) {
        if let last = self.last, last.slot == slot, last.rows.upperBound == rows.lowerBound {
            self[count - 1].rows = last.rows.lowerBound ..< rows.upperBound
        } else {
            append(LoRASegment(rows: rows, slot: slot))
        }
    }
}

/// One forward step over a mixed batch, described on the host.
///
/// Every sequence contributes a run of consecutive rows: a prompt chunk while it prefills, one token while it decodes
/// (Punica's mixed batch: no prefill phase, no decode phase). A backend turns this into its `StepPlan` once per step
/// and every layer reuses it.
public struct StepBatch: Sendable {
    public struct Sequence: Sendable {
        /// Rows of this step's input that belong to the sequence.
        public var rows: Range<Int>
        /// Tokens in the sequence's KV cache once this step has run (those cached before plus `rows.count`).
        public var contextLength: Int
        /// Pages holding positions 0..<contextLength (see `PageLayout`).
        public var blockTable: [Int32]

        public init(rows: Range<Int>, contextLength: Int, blockTable: [Int32]) {
            self.rows = rows
            self.contextLength = contextLength
            self.blockTable = blockTable
        }

        /// Position of the sequence's first new row.
        public var firstPosition: Int { contextLength - rows.count }
    }

    /// Input token of each row: [T].
    public var tokens: [Int32]
    public var sequences: [Sequence]
    /// Segments of consecutive rows sharing an adapter. Rows with no adapter belong to no segment.
    public var loraSegments: [LoRASegment]
    /// Rows whose next-token logits the step returns, in output order.
    public var logitRows: [Int]

    public init(tokens: [Int32], sequences: [Sequence], loraSegments: [LoRASegment], logitRows: [Int]) {
        self.tokens = tokens
        self.sequences = sequences
        self.loraSegments = loraSegments
        self.logitRows = logitRows
    }

    public var rowCount: Int { tokens.count }

    /// Position of every row: [T].
    public var positions: [Int32] {
        var positions = [Int32](repeating: 0, count: tokens.count)
        for sequence in sequences {
            for (i, row) in sequence.rows.enumerated() { positions[row] = Int32(sequence.firstPosition + i) }
        }
        return positions
    }
}
