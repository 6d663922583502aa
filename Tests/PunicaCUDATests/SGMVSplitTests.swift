@testable import PunicaCUDA
import Testing

/// How the shrink splits its input width (host arithmetic only, no GPU): decode-sized steps split so that the
/// multiprocessors have work, big steps do not, every split is whole warp steps and together they cover the width.
@Suite struct SGMVSplitTests {
    static func tiles(_ slots: [Int]) -> [(start: Int, end: Int, slot: Int)] { slots.enumerated().map { ($0, $0 + 1, $1) } }

    @Test func decodeStepsSplitTheInputWidth() {
        // One decode row, rank 16, 4096 inputs, 132 multiprocessors: 16 splits of 256 columns (4 warps × 2 steps each).
        let one = CUDABackend.shrinkSplit(tiles: Self.tiles([0]), ranks: [16], inWidth: 4096, multiprocessors: 132)
        #expect(one == (16, 256, 1))
        // An unaligned width: whole 32-column steps, the last split shorter, all of the width covered.
        let odd = CUDABackend.shrinkSplit(tiles: Self.tiles([0, 1]), ranks: [7, 256], inWidth: 4100, multiprocessors: 132)
        #expect(odd.width % 32 == 0 && odd.count > 1 && (odd.count - 1) * odd.width < 4100 && odd.count * odd.width >= 4100)
        #expect(odd.rankBlocks == 4)
    }

    @Test func stepsThatFillTheGPUDoNotSplit() {
        let many = CUDABackend.shrinkSplit(tiles: Self.tiles([Int](repeating: 0, count: 300)), ranks: [16], inWidth: 4096, multiprocessors: 132)
        #expect(many == (1, 4096, 1))
        // A slot without the projection adds no work; a narrow input has too few steps to split.
        let narrow = CUDABackend.shrinkSplit(tiles: Self.tiles([0, 1]), ranks: [0, 64], inWidth: 128, multiprocessors: 132)
        #expect(narrow == (1, 128, 1))
        // 90 groups would split in 3, but 90 tiles × 12 rank blocks is more than the arrival counters: no split.
        let wide = CUDABackend.shrinkSplit(tiles: Self.tiles([Int](repeating: 0, count: 90)), ranks: [16, 768], inWidth: 4096, multiprocessors: 132)
        #expect(wide.count == 1 && wide.rankBlocks == 12)
    }
}
