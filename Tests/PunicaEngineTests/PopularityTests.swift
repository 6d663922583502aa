import PunicaEngine
import Testing

@Suite struct PopularityTests {
    @Test(arguments: [1, 7, 32, 100, 256])
    func everyWorkloadCoversEveryRequestOnce(requests: Int) {
        for popularity in Popularity.allCases {
            let counts = popularity.requestsPerAdapter(requests)
            #expect(counts.reduce(0, +) == requests && counts.allSatisfy { $0 > 0 }, "\(popularity)")
            #expect(popularity.adapterIndices(requests: requests) == counts.indices.flatMap { [Int](repeating: $0, count: counts[$0]) })
        }
    }

    @Test func distinctUniformIdenticalShapes() {
        #expect(Popularity.distinct.requestsPerAdapter(32).count == 32)
        #expect(Popularity.uniform.requestsPerAdapter(32) == [6, 6, 5, 5, 5, 5])  // ⌈√32⌉ = 6 adapters
        #expect(Popularity.identical.requestsPerAdapter(32) == [32])
    }

    /// Each adapter gets about 1.5× the requests of the next, and the least popular still gets one.
    @Test func skewedIsGeometricWithRatioOneAndAHalf() {
        let counts = Popularity.skewed.requestsPerAdapter(256)
        #expect(counts == counts.sorted(by: >) && counts.last! >= 1)
        for (more, fewer) in zip(counts, counts.dropFirst()) where fewer >= 10 {
            #expect(abs(Double(more) / Double(fewer) - 1.5) < 0.15, "\(counts)")
        }
    }
}
