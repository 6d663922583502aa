#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute

/// Seeded mutations of a valid input, for fuzzing the loaders: each case applies a few random edits, byte-level
/// (bit flips, JSON punctuation, deleted or repeated ranges, truncation) and token-level (a number replaced by an
/// edge value such as 2⁶³ or -1, a fragment from `dictionary` inserted), so that most cases get past the JSON syntax
/// and reach the checks behind it. The same seed gives the same cases.
public struct Mutator {
    private var random: SplitMix64
    private let dictionary: [[UInt8]]

    /// Numbers at the edges of the loaders' checks: zero, negatives, Int and UInt64 limits, 2⁶¹ (head_dim),
    /// float32's and float16's limits, tiny and huge doubles.
    public static let edgeNumbers = ["0", "-1", "1", "2", "3", "7", "-7", "9223372036854775807", "9223372036854775808",
                                     "-9223372036854775808", "18446744073709551615", "2305843009213693952", "4294967296",
                                     "1e39", "-1e308", "1e-50", "0.5", "65505", "1e5", "3.4e38", "1e400", "-0", "null", "true",
                                     "\"x\"", "[]", "{}"]

    /// Cases per parser: 10 000 in CI; `PUNICA_FUZZ_CASES` asks for more (a longer local run).
    public static let cases = ProcessInfo.processInfo.environment["PUNICA_FUZZ_CASES"].flatMap { Int($0) } ?? 10_000
    /// Added to every fuzz test's seed: `PUNICA_FUZZ_SEED` explores other cases; a failure names the seed to rerun.
    public static let seedOffset = ProcessInfo.processInfo.environment["PUNICA_FUZZ_SEED"].flatMap { UInt64($0) } ?? 0

    public init(seed: UInt64, dictionary: [String] = []) {
        random = SplitMix64(seed: seed &+ Self.seedOffset &* 0x9E37_79B9)
        self.dictionary = dictionary.map { Array($0.utf8) } + Self.edgeNumbers.map { Array($0.utf8) }
    }

    public mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &random) }

    /// `input` with 1–4 random edits.
    public mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        for _ in 0..<int(1..<5) { edit(&bytes) }
        return bytes
    }

    private mutating func edit(_ bytes: inout [UInt8]) {
        guard !bytes.isEmpty else {
            bytes = dictionary[int(0..<dictionary.count)]
            return
        }
        let at = int(0..<bytes.count)
        switch int(0..<10) {
        case 0:
            bytes[at] ^= 1 << UInt8(int(0..<8))
        case 1:
            let punctuation = Array("{}[]\",:-0 e".utf8)
            bytes[at] = punctuation[int(0..<punctuation.count)]
        case 2:
            bytes.removeSubrange(at ..< min(bytes.count, at + int(1..<9)))
        case 3:
            let end = min(bytes.count, at + int(1..<33))
            bytes.insert(contentsOf: bytes[at..<end], at: int(0..<bytes.count + 1))
        case 4:
            bytes.removeSubrange(int(0..<bytes.count)...)
        case 5:
            bytes.insert(contentsOf: dictionary[int(0..<dictionary.count)], at: at)
        default:
            // A number (a run of digits, signs, dots and exponents) becomes another value, in 40 % of the edits.
            let numberChars = Set(Array("0123456789-+.eE".utf8))
            let starts = bytes.indices.filter { numberChars.contains(bytes[$0]) && ($0 == 0 || !numberChars.contains(bytes[$0 - 1])) }
            guard let start = starts.isEmpty ? nil : starts[int(0..<starts.count)] else { return }
            let end = bytes[start...].firstIndex { !numberChars.contains($0) } ?? bytes.count
            bytes.replaceSubrange(start..<end, with: Array(Self.edgeNumbers[int(0..<Self.edgeNumbers.count)].utf8))
        }
    }
}
