/// Compares two float arrays elementwise with |a-b| <= atol + rtol*|b|.
/// Returns nil when they match, else a message with the max error and the first mismatches (for `#expect`).
public func closeMismatch(_ actual: [Float], _ expected: [Float], atol: Float, rtol: Float = 0) -> String? {
    guard actual.count == expected.count else { return "count \(actual.count) != expected \(expected.count)" }
    var maxError: Float = 0
    var mismatches: [String] = []
    for i in actual.indices {
        let error = abs(actual[i] - expected[i])
        if !(error <= atol + rtol * abs(expected[i])) {
            if mismatches.count < 5 { mismatches.append("[\(i)] \(actual[i]) vs \(expected[i])") }
            maxError = max(maxError, error.isNaN ? .infinity : error)
        }
    }
    return mismatches.isEmpty ? nil : "max error \(maxError); first mismatches: \(mismatches.joined(separator: ", "))"
}
