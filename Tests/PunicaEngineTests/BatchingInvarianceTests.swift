import PunicaCPU
import Testing
import TestSupport

/// The real CPU model: whatever else shares the batch, a greedy request produces the tokens it produces alone; a
/// prompt's choices sharing its prefill produce what they produce apart.
@Suite struct BatchingInvarianceTests {
    @Test func sixtyFourRequestsOverEightAdaptersMatchTheirSoloRuns() async throws {
        try await BatchingInvariance.sixtyFourRequestsOverEightAdaptersMatchTheirSoloRuns(on: CPUBackend())
    }

    @Test func promptGroupsMatchIndependentRequests() async throws {
        try await BatchingInvariance.promptGroupsMatchIndependentRequests(on: CPUBackend())
    }
}
