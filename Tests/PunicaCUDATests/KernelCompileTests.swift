import Foundation
import PunicaCUDA
import Testing

/// Every kernel compiles through NVRTC for Ampere and Hopper, for both storage types. Needs no GPU: CI runs it with
/// NVRTC and the CUDA headers from PyPI (nvidia-cuda-nvrtc, nvidia-cuda-runtime); where NVRTC is absent it skips,
/// unless PUNICA_REQUIRE_NVRTC=1 (as CI sets) makes that a failure.
@Suite struct KernelCompileTests {
    @Test func everyKernelCompilesForAmpereAndHopper() throws {
        let sizes: [String: Int]
        do {
            sizes = try KernelSources.compileAll(architectures: ["sm_80", "sm_90a"])
        } catch let error as CUDAError {
            if case .libraryNotFound = error, ProcessInfo.processInfo.environment["PUNICA_REQUIRE_NVRTC"] != "1" { return }
            throw error
        }
        #expect(sizes.count == 16)  // 4 files × 2 storage types × 2 architectures
        #expect(sizes.values.allSatisfy { $0 > 0 })
    }
}
