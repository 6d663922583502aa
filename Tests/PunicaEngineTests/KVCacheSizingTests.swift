import PunicaEngine
import Testing

/// The KV cache takes what the utilization budget leaves after memory in use and the reserve, in whole pages.
@Suite struct KVCacheSizingTests {
    let gib = 1 << 30

    @Test func takesTheBudgetLeftAfterUsedAndReservedMemoryInWholePages() throws {
        // 100 GiB device, 20 GiB in use (weights), 0.9 utilization, 5 GiB reserved: 65 GiB for KV.
        let sizing = try KVCacheSizing(freeBytes: 80 * gib, totalBytes: 100 * gib, utilization: 0.9, reservedBytes: 5 * gib,
                                       bytesPerToken: 512 << 10, pageSize: 16)
        #expect(sizing.tokens == 65 * 2048)  // 65 GiB / 512 KiB per token, a multiple of 16
        #expect(sizing.usedBytes == 20 * gib)
        #expect(sizing.summary.contains("\(65 * 2048) tokens"), "\(sizing.summary)")
    }

    @Test func roundsDownToWholePages() throws {
        let sizing = try KVCacheSizing(freeBytes: 1000, totalBytes: 1000, utilization: 1, reservedBytes: 0, bytesPerToken: 10, pageSize: 16)
        #expect(sizing.tokens == 96)  // 100 tokens fit; 6 whole pages of 16
    }

    @Test func neverMoreThanRunningRequestsCanUse() throws {
        let sizing = try KVCacheSizing(freeBytes: 80 * gib, totalBytes: 100 * gib, utilization: 0.9, reservedBytes: 5 * gib,
                                       bytesPerToken: 512, pageSize: 16, maxTokens: 64 * 1000)
        #expect(sizing.tokens == 64_000)
    }

    @Test func notEnoughMemoryIsAnErrorNamingTheSizes() {
        #expect(throws: KVCacheSizingError.self) {
            try KVCacheSizing(freeBytes: 10 * gib, totalBytes: 100 * gib, utilization: 0.9, reservedBytes: 1 * gib,
                              bytesPerToken: 512 << 10, pageSize: 16)
        }
        do {
            _ = try KVCacheSizing(freeBytes: 10 * gib, totalBytes: 100 * gib, utilization: 0.9, reservedBytes: 1 * gib,
                                  bytesPerToken: 512 << 10, pageSize: 16)
        } catch {
            #expect(error.description.contains("90.0 GiB in use") && error.description.contains("--gpu-memory-utilization"),
                    "\(error)")
        }
        #expect(throws: KVCacheSizingError.utilization(1.5)) {
            try KVCacheSizing(freeBytes: gib, totalBytes: gib, utilization: 1.5, reservedBytes: 0, bytesPerToken: 1, pageSize: 1)
        }
    }
}
