@testable import PunicaCUDA
import PunicaCompute
import Testing

/// The attention work plan on the host (no GPU): every query row of every head is covered by exactly one tile, whose
/// splits partition exactly the keys the row may see (from its tile's first window start to its tile's last query),
/// tiles fit their kernel's rows, and split tiles own disjoint partial slots named by their merge.
@Suite struct AttentionWorkTests {
    @Test(arguments: [(8, 8, nil), (32, 32, nil), (32, 8, nil), (16, 2, 300), (64, 1, nil), (6, 2, 50)] as [(Int, Int, Int?)])
    func itemsCoverEveryRowAndKeyOnce(queryHeads: Int, kvHeads: Int, window: Int?) {
        let shape = AttentionShape(queryHeads: queryHeads, kvHeads: kvHeads, headDim: 128, slidingWindow: window)
        var random = SplitMix64(seed: 7)
        var sequences: [StepBatch.Sequence] = []
        var rows = 0
        for index in 0..<30 {
            let new = index % 5 == 0 ? Int.random(in: 2...700, using: &random) : 1
            let cached = Int.random(in: 0...(index % 7 == 0 ? 33000 : 3000), using: &random)
            sequences.append(.init(rows: rows ..< rows + new, contextLength: cached + new, blockTable: []))
            rows += new
        }
        let batch = StepBatch(tokens: [Int32](repeating: 0, count: rows), sequences: sequences, loraSegments: [], logitRows: [])
        let work = AttentionWork(batch: batch, shape: shape, multiprocessors: 132)

        #expect(work.rows64.allSatisfy { $0.tokens * shape.groupSize <= 64 && $0.tokens * shape.groupSize > 16 })
        #expect(work.rows16.allSatisfy { $0.tokens * shape.groupSize <= 16 })
        #expect(work.decode.allSatisfy { $0.tokens * shape.groupSize <= AttentionDecode.tileRows })
        let oneRowTiles = (work.decode + work.rows16).filter { $0.tokens * shape.groupSize <= AttentionDecode.tileRows }
        let decodeRows = Set(oneRowTiles.map(\.rowStart)).count  // tiles, before their key splits
        #expect(decodeRows == 0 || work.decode.isEmpty != AttentionDecode.pays(tiles: decodeRows, shape: shape, multiprocessors: 132),
                "one-row tiles take the CUDA-core kernel exactly when there are enough of them")
        // Items of one tile share (rowStart, tokens); their key ranges must tile [window start of the first query, last query].
        var tiles: [Int: [AttentionWork.Item]] = [:]
        for item in work.rows64 + work.rows16 + work.decode { tiles[item.rowStart, default: []].append(item) }
        var covered = [Int](repeating: 0, count: rows)
        for (rowStart, items) in tiles {
            let first = items[0]
            #expect(items.allSatisfy { $0.tokens == first.tokens && $0.sequence == first.sequence && $0.position == first.position })
            let sequence = sequences[first.sequence]
            #expect(first.position == sequence.firstPosition + rowStart - sequence.rows.lowerBound)
            for row in rowStart ..< rowStart + first.tokens { covered[row] += 1 }
            let ranges = items.map { $0.kvBegin ..< $0.kvEnd }.sorted { $0.lowerBound < $1.lowerBound }
            let windowStart = window.map { max(0, first.position - $0 + 1) } ?? 0
            #expect(ranges.first?.lowerBound == windowStart && ranges.last?.upperBound == first.position + first.tokens)
            #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound && !$0.isEmpty })
            if items.count == 1 {
                #expect(first.partial == -1)
            } else {
                let merge = work.merges.first { $0.rowStart == rowStart }
                #expect(merge?.splits == items.count && merge?.tokens == first.tokens)
                let tileRows = first.tokens * shape.groupSize
                let expected = (0..<items.count).map { (merge?.partial ?? -1) + $0 * shape.kvHeads * tileRows }
                #expect(Set(items.map(\.partial)) == Set(expected))
            }
        }
        #expect(covered.allSatisfy { $0 == 1 }, "every row in exactly one tile")
        // Merges' slot ranges are disjoint and fill the partial buffer.
        let spans = work.merges.map { $0.partial ..< $0.partial + $0.splits * shape.kvHeads * $0.tokens * shape.groupSize }.sorted { $0.lowerBound < $1.lowerBound }
        #expect(zip(spans, spans.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        #expect((spans.last?.upperBound ?? 0) == work.partialSlots)
    }

    /// A recorded decode step keeps its lists' sizes: one tile per sequence, cut into exactly the asked splits, on the
    /// kernel its group size and block count pick (the CUDA-core one for MHA rows × heads that fill the GPU).
    @Test(arguments: [(32, 32, 8, AttentionRows16.name), (32, 32, 24, AttentionDecode.name), (32, 8, 8, AttentionRows16.name),
                      (64, 1, 8, AttentionRows64.name)])
    func fixedDecodeWorkHasOneTilePerSequenceAndSplit(queryHeads: Int, kvHeads: Int, rows: Int, kernel: String) {
        let shape = AttentionShape(queryHeads: queryHeads, kvHeads: kvHeads, headDim: 128)
        let sequences = (0..<rows).map { StepBatch.Sequence(rows: $0 ..< $0 + 1, contextLength: 1 + $0 * 150, blockTable: []) }
        let batch = StepBatch(tokens: [Int32](repeating: 0, count: rows), sequences: sequences, loraSegments: [], logitRows: Array(0..<rows))
        let splits = AttentionWork.fixedDecodeSplits(rows: rows, shape: shape, maxContext: 4096, multiprocessors: 132)
        #expect(splits > 1 && splits <= 16 && splits & (splits - 1) == 0, "\(rows) rows are fewer blocks than 132 multiprocessors hold")
        let work = AttentionWork(fixedDecode: batch, shape: shape, splits: splits, multiprocessors: 132)
        #expect(AttentionWork.decodeKernel(rows: rows, shape: shape, multiprocessors: 132).name == kernel)
        let lists = [AttentionDecode.name: work.decode, AttentionRows16.name: work.rows16, AttentionRows64.name: work.rows64]
        #expect(lists[kernel]?.count == rows * splits && lists.values.map(\.count).reduce(0, +) == rows * splits)
        #expect(work.merges.count == rows && work.merges.allSatisfy { $0.splits == splits })
    }

    @Test func unsupportedShapesAreRejected() {
        #expect(throws: CUDAError.self) { try AttentionKernels.check(AttentionShape(queryHeads: 4, kvHeads: 4, headDim: 100)) }
        #expect(throws: CUDAError.self) { try AttentionKernels.check(AttentionShape(queryHeads: 4, kvHeads: 4, headDim: 512)) }
        #expect(throws: CUDAError.self) { try AttentionKernels.check(AttentionShape(queryHeads: 128, kvHeads: 1, headDim: 64)) }
        #expect(throws: Never.self) { try AttentionKernels.check(AttentionShape(queryHeads: 32, kvHeads: 8, headDim: 96)) }
    }
}
