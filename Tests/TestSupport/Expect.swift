import PunicaEngine

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

/// Where two top-token lists disagree beyond a near-tie: nil when they have the same length and every rank holds the
/// same token, or one whose logprob there is within `tolerance` of the other's (summed in another order, as by other
/// kernels or another batch, near-tied tokens may swap ranks; nothing else may). Else a message (for `#expect`).
public func topOrderMismatch(_ actual: [TokenLogprob], _ expected: [TokenLogprob], tolerance: Float) -> String? {
    guard actual.count == expected.count else { return "\(actual.count) top tokens, expected \(expected.count)" }
    let swapped = zip(actual, expected).enumerated().filter { $1.0.id != $1.1.id && !(abs($1.0.logprob - $1.1.logprob) <= tolerance) }
    return swapped.isEmpty ? nil : swapped.map { "rank \($0): \($1.0) vs \($1.1)" }.joined(separator: ", ")
}

