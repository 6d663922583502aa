/// One adapter's low-rank weights for one projection of one layer, its scale folded into B.
///
/// Projections that the model fuses (q|k|v, gate|up) keep one A with the targeted parts' A matrices stacked by rows,
/// and one expand piece per targeted part, so a single shrink serves them all:
///
///     v[rows, 0..<rank]                     = x[rows] · Aᵀ                        A: [rank, in]
///     y[rows, piece.outputOffset ..< +out]  += v[rows, piece.rankOffset ..< +r] · Bᵀ   B: [out, r]  (scale · B_peft)
public final class LoRAWeights {
    public struct Piece {
        public let b: Tensor
        public let rankOffset: Int
        public let outputOffset: Int

        public init(b: Tensor, rankOffset: Int, outputOffset: Int) {
            self.b = b
            self.rankOffset = rankOffset
            self.outputOffset = outputOffset
        }

        public var rank: Int { b.shape[1] }
        public var outputWidth: Int { b.shape[0] }
    }

    public let a: Tensor
    public let pieces: [Piece]
    /// A backend's own form of these weights (the CPU's transposed B), made on first use and kept while they are.
    public var backendForm: AnyObject?

    public init(a: Tensor, pieces: [Piece]) {
        self.a = a
        self.pieces = pieces
    }

    public var rank: Int { a.rows }
    public var inputWidth: Int { a.shape[1] }
}

/// Every resident adapter's weights for one projection of one layer, indexed by adapter slot; nil where that adapter
/// does not target the projection. Updated in place when the resident set changes, never per step, so a backend's
/// device table for it can stay at one address (a recorded step reads it there).
public final class LoRAProjection {
    public private(set) var slots: [LoRAWeights?]
    /// Bumped by every `update`: a backend rebuilds its table when the version it built from is older.
    public private(set) var version = 0
    /// A backend's own form of this table (device pointers, say), made on first use and reused by every step.
    public var backendTable: AnyObject?

    public init(_ slots: [LoRAWeights?]) { self.slots = slots }

    public func update(_ slots: [LoRAWeights?]) {
        self.slots = slots
        version += 1
    }

    public var isEmpty: Bool { slots.allSatisfy { $0 == nil } }
    /// Widest rank of any slot: the columns of `v` the shrink writes.
    public var maxRank: Int { slots.map { $0?.rank ?? 0 }.max() ?? 0 }
}
