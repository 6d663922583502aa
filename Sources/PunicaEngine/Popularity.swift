/// How requests spread over adapters, in Punica's terms: which adapter each of n requests uses.
public enum Popularity: String, CaseIterable, Sendable {
    /// Every request its own adapter.
    case distinct
    /// ⌈√n⌉ adapters, equally popular.
    case uniform
    /// Geometric popularity: each adapter gets 1.5× the requests of the next.
    case skewed
    /// One adapter for all.
    case identical

    /// The adapter index of each of `count` requests, grouped (requests of one adapter are adjacent).
    public func adapterIndices(requests count: Int) -> [Int] {
        let counts = requestsPerAdapter(count)
        return counts.enumerated().flatMap { adapter, requests in [Int](repeating: adapter, count: requests) }
    }

    /// Requests of each adapter, most popular first; they sum to `count`.
    public func requestsPerAdapter(_ count: Int) -> [Int] {
        guard count > 0 else { return [] }
        switch self {
        case .distinct:
            return [Int](repeating: 1, count: count)
        case .identical:
            return [count]
        case .uniform:
            let adapters = Int(Double(count).squareRoot().rounded(.up))
            return (0..<adapters).map { count / adapters + ($0 < count % adapters ? 1 : 0) }
        case .skewed:
            // Weights 1, 1/1.5, 1/1.5², …, as many adapters as still get a request; largest remainders fill up.
            var adapters = 1
            while true {
                let weights = (0...adapters).map { pow15(-$0) }
                if Double(count) * weights[adapters] / weights.reduce(0, +) < 1 { break }
                adapters += 1
            }
            let weights = (0..<adapters).map { pow15(-$0) }
            let total = weights.reduce(0, +)
            let exact = weights.map { Double(count) * $0 / total }
            var counts = exact.map { Int($0) }
            let byRemainder = exact.indices.sorted { exact[$0] - Double(counts[$0]) > exact[$1] - Double(counts[$1]) }
            for index in byRemainder.prefix(count - counts.reduce(0, +)) { counts[index] += 1 }
            return counts
        }
    }
}

private func pow15(_ exponent: Int) -> Double {
    exponent >= 0 ? (0..<exponent).reduce(1) { value, _ in value * 1.5 } : 1 / pow15(-exponent)
}
