import PunicaCompute

/// Parameters of the kernels in attention.cu (see `KernelParameters`).
///
/// The tile kernels share one parameter list: `AttentionTiles<Kernel>` is it, and the `AttentionKernel` type says
/// which entry point, with its tile geometry (mirroring attention.cu's constants).
struct AttentionTiles<Kernel: AttentionKernel>: KernelParameters {
    static var kernel: String { Kernel.name }
    var qkv: UInt64 = 0, keys: UInt64 = 0, values: UInt64 = 0, items: UInt64 = 0, blockTables: UInt64 = 0, out: UInt64 = 0
    var partialAcc: UInt64 = 0, partialMaxSum: UInt64 = 0
    var maxPages: Int32 = 0, qkvWidth: Int32 = 0, queryHeads: Int32 = 0, kvHeads: Int32 = 0, headDim: Int32 = 0, pageSize: Int32 = 0
    var slidingWindow: Int32 = 0
    var scaleLog2: Float = 0
    var softcapLog2: Float = 0
}

/// One tile kernel of attention.cu: query rows per tile, the head dims it serves, and its shared memory.
protocol AttentionKernel {
    static var name: String { get }
    /// Most query rows of one tile (tokens × group size): 16 per warp, 16 for all four warps, or DECODE_ROWS.
    static var tileRows: Int { get }
    /// Head dims it runs; a dim runs in the smallest compiled size ≥ it (32, 64, 128 or 256).
    static var headDims: ClosedRange<Int> { get }
    /// Blocks a list of its tiles is split into per multiprocessor (flash-decoding): about what fits at once.
    static var blocksPerMultiprocessor: Int { get }
    static func sharedBytes(headDim: Int) -> Int
}

/// The tensor-core tiles (attention_tile).
protocol AttentionMMAKernel: AttentionKernel {}

extension AttentionMMAKernel {
    /// Keys per shared-memory tile (TILE_KEYS).
    static func tileKeys(paddedHeadDim: Int) -> Int { paddedHeadDim == 256 && tileRows == 64 ? 32 : 64 }

    /// Q tile plus two K and two V tiles, rows padded by 8 scalars.
    static func sharedBytes(headDim: Int) -> Int {
        let padded = AttentionKernels.paddedHeadDim(headDim)
        return (tileRows + 4 * tileKeys(paddedHeadDim: padded)) * (padded + 8) * 2
    }

    /// 64-row tiles are compute-bound (2 resident blocks per multiprocessor); 16-row ones memory-bound, wanting more
    /// blocks in flight.
    static var blocksPerMultiprocessor: Int { tileRows == 64 ? 2 : 4 }
}

enum AttentionRows64: AttentionMMAKernel {
    static let name = "attention_rows64", tileRows = 64, headDims = 8...128
}

enum AttentionRows16: AttentionMMAKernel {
    static let name = "attention_rows16", tileRows = 16, headDims = 8...128
}

enum AttentionRows64D256: AttentionMMAKernel {
    static let name = "attention_rows64_d256", tileRows = 64, headDims = 129...256
}

enum AttentionRows16D256: AttentionMMAKernel {
    static let name = "attention_rows16_d256", tileRows = 16, headDims = 129...256
}

/// CUDA-core tiles of one query row (an MHA decode token), every head dim: 64 registers and no K/V staging in shared
/// memory, so about 8 blocks fit per multiprocessor.
///
/// Each warp has 4 keys' loads in flight, fewer than the 16-row tensor-core tile's double-buffered 64-key tiles, so it
/// wins only when many blocks run at once. On an H100 (session 13, `bench attention`, MHA d128) it took 29.5 / 41.7 µs
/// at batch 32 and contexts 128 / 192 against the 16-row tile's 35.0 / 46.0, but 17.6 against 13.4 at batch 8
/// (256 blocks). Below `fewestBlocksPerMultiprocessor` the decode rows take the 16-row tile.
enum AttentionDecode: AttentionKernel {
    static let name = "attention_decode", tileRows = 1, headDims = 8...256, blocksPerMultiprocessor = 8
    static let fewestBlocksPerMultiprocessor = 4

    /// Whether `tiles` one-row tiles (before any key split) are enough blocks for this kernel.
    static func pays(tiles: Int, shape: AttentionShape, multiprocessors: Int) -> Bool {
        tiles * shape.kvHeads >= fewestBlocksPerMultiprocessor * multiprocessors
    }

    /// Each warp's rows (padded head dim + 8 floats) and their (max, sum).
    static func sharedBytes(headDim: Int) -> Int { 4 * tileRows * (AttentionKernels.paddedHeadDim(headDim) + 10) * 4 }
}

enum AttentionKernels {
    /// Threads per block of every attention kernel.
    static let threads = 128
    /// Most query heads per KV head: a 64-row tile holds at least one token's group.
    static let maxGroupSize = 64

    /// The compiled head dim that runs `headDim`.
    static func paddedHeadDim(_ headDim: Int) -> Int { [32, 64, 128, 256].first { $0 >= headDim } ?? headDim }

    /// Rejects head layouts the kernels do not implement, naming the limit.
    static func check(_ shape: AttentionShape) throws(CUDAError) {
        guard shape.headDim % 8 == 0 && (8...256).contains(shape.headDim) else {
            throw .unsupported("CUDA attention needs a head dim that is a multiple of 8 in 8...256 (16-byte rows), not \(shape.headDim)")
        }
        guard shape.groupSize <= maxGroupSize else {
            throw .unsupported("CUDA attention supports at most \(maxGroupSize) query heads per KV head, not \(shape.groupSize)")
        }
    }
}

struct AttentionMerge: KernelParameters {
    static let kernel = "attention_merge"
    var merges: UInt64 = 0, partialAcc: UInt64 = 0, partialMaxSum: UInt64 = 0, out: UInt64 = 0
    var queryHeads: Int32 = 0, kvHeads: Int32 = 0, headDim: Int32 = 0
}

/// attention.cu's work for one step and head layout, on the host (pure: tested without a GPU).
///
/// Each sequence's rows become query tiles of whole tokens: a sequence whose rows × group fit 16 rows is one
/// 16-row tile (decode), or a decode tile where they fit `AttentionDecode.tileRows`; longer ones are cut into 64-row
/// tiles of 64 / group tokens (the last, if it fits, in a smaller tile). A tile's keys run from its first query's
/// sliding-window start to its last query (causal: later keys are never loaded). Each list is then split over the
/// keys (flash-decoding) until it has about its kernel's `blocksPerMultiprocessor`: a split covers a whole number of
/// 64-key tiles and at least `minimumSplitKeys`, and the merge list combines the splits of each split tile. Tiles are
/// listed longest first, so the causal prefill's long tiles do not start last. One-row tiles run on the CUDA-core
/// kernel only when there are enough of them (`AttentionDecode.pays`), else on the 16-row tile.
struct AttentionWork: Equatable {
    struct Item: Equatable {
        var sequence, rowStart, tokens, position, kvBegin, kvEnd: Int
        /// First partial slot of a split, -1 for a tile written straight to the output.
        var partial: Int
    }

    struct Merge: Equatable {
        var rowStart, tokens, partial, splits: Int
    }

    var rows64: [Item] = [], rows16: [Item] = [], decode: [Item] = []
    var merges: [Merge] = []
    /// Float32 partial rows the splits write: [partialSlots, headDim] accumulators and [partialSlots, 2] (max, sum).
    var partialSlots = 0

    static let minimumSplitKeys = 256
    static let splitGranule = 64

    init(batch: StepBatch, shape: AttentionShape, multiprocessors: Int) {
        let group = shape.groupSize
        precondition(group <= AttentionKernels.maxGroupSize, "AttentionKernels.check rejects groups above \(AttentionKernels.maxGroupSize)")
        var tiles64: [Item] = [], tiles16: [Item] = [], decodeTiles: [Item] = []
        for (index, sequence) in batch.sequences.enumerated() where !sequence.rows.isEmpty {
            let count = sequence.rows.count
            let tokensPerTile = count * group <= AttentionRows16.tileRows ? count : AttentionRows64.tileRows / group
            for start in stride(from: 0, to: count, by: tokensPerTile) {
                let tokens = min(tokensPerTile, count - start), position = sequence.firstPosition + start
                let tile = Item(sequence: index, rowStart: sequence.rows.lowerBound + start, tokens: tokens, position: position,
                                kvBegin: shape.slidingWindow.map { max(0, position - $0 + 1) } ?? 0, kvEnd: position + tokens, partial: -1)
                switch tokens * group {
                case ...AttentionDecode.tileRows: decodeTiles.append(tile)
                case ...AttentionRows16.tileRows: tiles16.append(tile)
                default: tiles64.append(tile)
                }
            }
        }
        if !AttentionDecode.pays(tiles: decodeTiles.count, shape: shape, multiprocessors: multiprocessors) {
            tiles16 += decodeTiles
            decodeTiles = []
        }
        rows64 = split(tiles64, on: AttentionRows64.self, multiprocessors: multiprocessors, shape: shape)
        rows16 = split(tiles16, on: AttentionRows16.self, multiprocessors: multiprocessors, shape: shape)
        decode = split(decodeTiles, on: AttentionDecode.self, multiprocessors: multiprocessors, shape: shape)
    }

    /// A recorded decode step's work: every sequence (one token each, padding included) one tile in sequence order,
    /// cut into exactly `splits` key ranges of whole 64-key tiles (the last ones empty where the context is short), so
    /// the item lists and partials keep their size from replay to replay.
    init(fixedDecode batch: StepBatch, shape: AttentionShape, splits: Int, multiprocessors: Int) {
        precondition(batch.isDecodeOnly && splits >= 1, "a fixed attention plan is for decode rows")
        var tiles: [Item] = []
        for (index, sequence) in batch.sequences.enumerated() {
            let position = sequence.firstPosition
            let begin = shape.slidingWindow.map { max(0, position - $0 + 1) } ?? 0
            let tile = Item(sequence: index, rowStart: sequence.rows.lowerBound, tokens: 1, position: position, kvBegin: begin,
                            kvEnd: position + 1, partial: -1)
            guard splits > 1 else {
                tiles.append(tile)
                continue
            }
            let perSplit = ((tile.kvEnd - begin + splits - 1) / splits + Self.splitGranule - 1) / Self.splitGranule * Self.splitGranule
            for s in 0..<splits {
                var piece = tile
                piece.kvBegin = min(tile.kvEnd, begin + s * perSplit)
                piece.kvEnd = min(tile.kvEnd, piece.kvBegin + perSplit)
                piece.partial = partialSlots + s * shape.kvHeads * shape.groupSize
                tiles.append(piece)
            }
            merges.append(Merge(rowStart: tile.rowStart, tokens: 1, partial: partialSlots, splits: splits))
            partialSlots += splits * shape.kvHeads * shape.groupSize
        }
        switch Self.decodeKernel(rows: batch.sequences.count, shape: shape, multiprocessors: multiprocessors) {
        case is AttentionDecode.Type: decode = tiles
        case is AttentionRows16.Type: rows16 = tiles
        default: rows64 = tiles
        }
    }

    /// The kernel that runs a recorded decode step's tiles: `rows` tokens, a tile of one token's group each.
    static func decodeKernel(rows: Int, shape: AttentionShape, multiprocessors: Int) -> any AttentionKernel.Type {
        switch shape.groupSize {
        case ...AttentionDecode.tileRows where AttentionDecode.pays(tiles: rows, shape: shape, multiprocessors: multiprocessors):
            AttentionDecode.self
        case ...AttentionRows16.tileRows: AttentionRows16.self
        default: AttentionRows64.self
        }
    }

    /// Key splits of a recorded decode step of `rows` rows at contexts up to `maxContext`: enough blocks for about its
    /// kernel's `blocksPerMultiprocessor`, each split at least `minimumSplitKeys`, a power of two up to 16 (a
    /// recording's key).
    static func fixedDecodeSplits(rows: Int, shape: AttentionShape, maxContext: Int, multiprocessors: Int) -> Int {
        let kernel = decodeKernel(rows: rows, shape: shape, multiprocessors: multiprocessors)
        let blocks = kernel.blocksPerMultiprocessor * multiprocessors, kvHeads = shape.kvHeads
        let wanted = min((maxContext + minimumSplitKeys - 1) / minimumSplitKeys, (blocks + rows * kvHeads - 1) / (rows * kvHeads))
        var splits = 1
        while splits < min(16, wanted) { splits *= 2 }
        return splits
    }

    private mutating func split(_ tiles: [Item], on kernel: any AttentionKernel.Type, multiprocessors: Int, shape: AttentionShape) -> [Item] {
        let keys = tiles.reduce(0) { $0 + $1.kvEnd - $1.kvBegin } * shape.kvHeads
        let blocks = kernel.blocksPerMultiprocessor * multiprocessors
        let chunk = max(Self.minimumSplitKeys, (keys + blocks - 1) / max(1, blocks))
        var items: [Item] = []
        for tile in tiles.sorted(by: { $0.kvEnd - $0.kvBegin > $1.kvEnd - $1.kvBegin }) {
            let length = tile.kvEnd - tile.kvBegin
            let wanted = (length + chunk - 1) / chunk
            let perSplit = ((length + wanted - 1) / wanted + Self.splitGranule - 1) / Self.splitGranule * Self.splitGranule
            let splits = (length + perSplit - 1) / perSplit
            guard splits > 1 else {
                items.append(tile)
                continue
            }
            let rows = tile.tokens * shape.groupSize
            for s in 0..<splits {
                var piece = tile
                piece.kvBegin = tile.kvBegin + s * perSplit
                piece.kvEnd = min(tile.kvEnd, piece.kvBegin + perSplit)
                piece.partial = partialSlots + s * shape.kvHeads * rows
                items.append(piece)
            }
            merges.append(Merge(rowStart: tile.rowStart, tokens: tile.tokens, partial: partialSlots, splits: splits))
            partialSlots += splits * shape.kvHeads * rows
        }
        return items
    }

    /// `AttentionItem` and `AttentionMergeItem` of attention.cu, in that order: rows64 | rows16 | decode | merges.
    var words: [Int32] {
        let items = (rows64 + rows16 + decode).flatMap { item in
            [item.sequence, item.rowStart, item.tokens, item.position, item.kvBegin, item.kvEnd, item.partial, 0].map { Int32($0) }
        }
        return items + merges.flatMap { [$0.rowStart, $0.tokens, $0.partial, $0.splits].map { Int32($0) } }
    }
}

/// A step's `AttentionWork` on the device: the item lists in one int32 buffer and the splits' float32 partials.
final class CUDAAttentionPlan {
    let shape: AttentionShape
    private(set) var work: AttentionWork
    let buffer: Tensor?
    let partial: Tensor?

    convenience init(_ batch: StepBatch, shape: AttentionShape, backend: CUDABackend) {
        self.init(AttentionWork(batch: batch, shape: shape, multiprocessors: backend.multiprocessorCount), shape: shape, backend: backend)
    }

    init(_ work: AttentionWork, shape: AttentionShape, backend: CUDABackend) {
        self.shape = shape
        self.work = work
        let words = work.words
        // While a step is recorded nothing may be copied from the host: the lists are written by the refill before
        // each replay.
        buffer = words.isEmpty ? nil
            : backend.memory.recording ? backend.allocate([words.count], dtype: .float32, pooled: true) : backend.upload(words)
        partial = work.partialSlots == 0 ? nil
            : backend.allocate([work.partialSlots * (shape.headDim + 2)], dtype: .float32, pooled: true)
    }

    /// Rewrites the lists in place with `work` of the same shape (a recorded step's next replay).
    func refill(_ work: AttentionWork, backend: CUDABackend) {
        precondition(work.rows64.count == self.work.rows64.count && work.rows16.count == self.work.rows16.count
                     && work.decode.count == self.work.decode.count && work.merges.count == self.work.merges.count && work.partialSlots == self.work.partialSlots, "same shape")
        self.work = work
        if let buffer { backend.copyToDevice(work.words.withUnsafeBytes { Array($0) }, buffer.address) }
    }

    var rows64Items: UInt64 { buffer?.address ?? 0 }
    var rows16Items: UInt64 { rows64Items + UInt64(32 * work.rows64.count) }
    var decodeItems: UInt64 { rows16Items + UInt64(32 * work.rows16.count) }
    var mergeItems: UInt64 { decodeItems + UInt64(32 * work.decode.count) }
    var partialAcc: UInt64 { partial?.address ?? 0 }
    var partialMaxSum: UInt64 { partialAcc + UInt64(4 * work.partialSlots * shape.headDim) }
}
