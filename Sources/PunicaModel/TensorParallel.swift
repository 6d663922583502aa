import PunicaCompute

/// One rank's share of a model split over `count` devices, by Megatron-LM's tensor parallelism:
/// - q|k|v and gate|up are split by output (column-parallel): a rank holds its query heads, their KV heads and its part
///   of the intermediate width, and computes them from the whole input;
/// - o and down are split by input (row-parallel): each rank's product is a partial sum, which an all-reduce adds up;
/// - the embedding and lm_head are split by vocabulary: each rank looks up (zeros for others' tokens, then an
///   all-reduce) and scores its part of the vocabulary (then an all-gather);
/// - norms are copied to every rank. Where there are fewer KV heads than ranks, each rank keeps a copy of the one KV
///   head its query heads read.
/// LoRA follows the weight it adds to, as vLLM's default: A whole and B split for column-parallel projections, A split
/// and B whole for row-parallel ones, whose delta then joins the partial sum before the all-reduce (no communication
/// of its own).
public struct Shard: Sendable, Hashable, CustomStringConvertible {
    public let rank: Int
    public let count: Int

    /// The whole model on one device.
    public static let whole = Shard(rank: 0, count: 1)

    private init(rank: Int, count: Int) {
        self.rank = rank
        self.count = count
    }

    /// The `count` shards of a model of `config`; throws, naming the config field (of `path`), where `count` cannot
    /// split it evenly.
    public static func all(_ count: Int, config: ModelConfig, path: String) throws -> [Shard] {
        guard count >= 1 else { throw ModelError.invalidValue(path: path, field: "tensor parallel size", reason: "is \(count): it must be at least 1") }
        func require(_ condition: Bool, _ field: String, _ value: Int, _ rule: String) throws {
            guard condition else {
                throw ModelError.invalidValue(path: path, field: field, reason: "is \(value), which a tensor parallel size of \(count) cannot split (\(rule))")
            }
        }
        let attention = config.attention
        try require(attention.queryHeads % count == 0, "num_attention_heads", attention.queryHeads, "the size must divide it")
        try require(attention.kvHeads % count == 0 || count % attention.kvHeads == 0, "num_key_value_heads", attention.kvHeads,
                    "the size must divide it or be a multiple of it")
        try require(config.intermediateSize % count == 0, "intermediate_size", config.intermediateSize, "the size must divide it")
        try require(config.vocabularySize >= count, "vocab_size", config.vocabularySize, "the size must not exceed it")
        return (0..<count).map { Shard(rank: $0, count: count) }
    }

    public var description: String { "rank \(rank) of \(count)" }

    /// This rank's equal part of `total` items.
    func part(_ total: Int) -> Range<Int> { rank * (total / count) ..< (rank + 1) * (total / count) }

    /// This rank's part of a vocabulary of `size` tokens: the first `size % count` ranks take one more.
    public func vocabulary(_ size: Int) -> Range<Int> {
        let (base, extra) = size.quotientAndRemainder(dividingBy: count)
        let start = rank * base + min(rank, extra)
        return start ..< start + base + (rank < extra ? 1 : 0)
    }

    /// Every rank's part of a vocabulary of `size` tokens, in rank order.
    func vocabularyWidths(_ size: Int) -> [Int] { (0..<count).map { Shard(rank: $0, count: count).vocabulary(size).count } }

    func queryHeads(_ attention: AttentionShape) -> Range<Int> { part(attention.queryHeads) }

    func kvHeads(_ attention: AttentionShape) -> Range<Int> {
        guard attention.kvHeads < count else { return part(attention.kvHeads) }
        let head = rank * attention.kvHeads / count
        return head ..< head + 1
    }

    /// The head layout of this rank's part of a layer.
    public func attention(_ attention: AttentionShape) -> AttentionShape {
        AttentionShape(queryHeads: queryHeads(attention).count, kvHeads: kvHeads(attention).count, headDim: attention.headDim,
                       slidingWindow: attention.slidingWindow, scale: attention.scale, softcap: attention.softcap)
    }

    /// This rank's part of the MLP's intermediate width.
    public func intermediateWidth(_ config: ModelConfig) -> Int { config.intermediateSize / count }

    /// Whether `projection` is split by input (its products are partial sums), not by output.
    static func isRowParallel(_ projection: Projection) -> Bool { projection == .o || projection == .down }

    /// The part of `projection`'s weight ([outputs, inputs]) this rank holds: rows for a column-parallel projection
    /// (its parts' rows, for the fused checkpoints' q|k|v and gate|up), columns for a row-parallel one.
    func slice(_ projection: Projection, _ config: ModelConfig) -> WeightSlice {
        let attention = config.attention
        func elements(_ heads: Range<Int>, from offset: Int = 0) -> Range<Int> {
            offset + heads.lowerBound * attention.headDim ..< offset + heads.upperBound * attention.headDim
        }
        let (query, kv) = (queryHeads(attention), kvHeads(attention))
        let intermediate = part(config.intermediateSize)
        switch projection {
        case .q: return .rows([elements(query)])
        case .k, .v: return .rows([elements(kv)])
        case .qkv: return .rows([elements(query), elements(kv, from: attention.queryWidth), elements(kv, from: attention.queryWidth + attention.kvWidth)])
        case .o: return .columns(elements(query))
        case .gate, .up: return .rows([intermediate])
        case .gateUp: return .rows([intermediate, intermediate.lowerBound + config.intermediateSize ..< intermediate.upperBound + config.intermediateSize])
        case .down: return .columns(intermediate)
        }
    }
}

/// The part of a checkpoint matrix [rows, columns] (a weight, an embedding, a bias as one column) that a rank holds:
/// some of its rows, range after range, or a range of columns of every row.
enum WeightSlice: Equatable {
    case rows([Range<Int>])
    case columns(Range<Int>)

    /// The whole of a matrix of `rows` rows.
    static func whole(rows: Int) -> WeightSlice { .rows([0..<rows]) }

    /// The shape of the slice of a matrix of `shape` ([rows] or [rows, columns]).
    func shape(of shape: [Int]) -> [Int] {
        switch self {
        case let .rows(ranges): [ranges.reduce(0) { $0 + $1.count }] + shape.dropFirst()
        case let .columns(range): [shape[0], range.count]
        }
    }

    /// The slice as runs of consecutive elements of the row-major matrix of `shape`, in order.
    func runs(of shape: [Int]) -> [(start: Int, count: Int)] {
        let width = shape.dropFirst().reduce(1, *)
        switch self {
        case let .rows(ranges): return ranges.map { ($0.lowerBound * width, $0.count * width) }
        case let .columns(range): return (0..<shape[0]).map { ($0 * width + range.lowerBound, range.count) }
        }
    }
}

extension TensorData {
    /// Calls `body` with the bytes of `slice` of this tensor, back to back: the tensor's own where the slice is one run
    /// (a whole tensor, a column-parallel part of one projection), else a gathered copy.
    func withSlice<R>(_ slice: WeightSlice, _ body: (UnsafeRawPointer) throws -> R) rethrows -> R {
        let (runs, size) = (slice.runs(of: shape), dtype.byteSize)
        if runs.count == 1 { return try body(bytes + runs[0].start * size) }
        var gathered = [UInt8](repeating: 0, count: runs.reduce(0) { $0 + $1.count } * size)
        gathered.withUnsafeMutableBytes { target in
            var offset = 0
            for run in runs {
                (target.baseAddress! + offset).copyMemory(from: bytes + run.start * size, byteCount: run.count * size)
                offset += run.count * size
            }
        }
        return try gathered.withUnsafeBytes { try body($0.baseAddress!) }
    }
}
