import PunicaCPU
import Testing
import TestSupport

/// The real CPU model: whatever else shares the batch, a greedy request produces the tokens it produces alone.
@Suite struct BatchingInvarianceTests {
    @Test func sixtyFourRequestsOverEightAdaptersMatchTheirSoloRuns() async throws {
        try await BatchingInvariance.sixtyFourRequestsOverEightAdaptersMatchTheirSoloRuns(on: CPUBackend())
    }
}
