import PunicaCompute

/// Page-locked host memory, kept for reuse. cuMemHostAlloc pins every page as it allocates (about 1.4 ms per MB on
/// an H200 host: most of a cold adapter load), so a dropped buffer goes back to a free list of its size, and the
/// next buffer of that size (the next adapter of the same shape, the next step's sampled tokens) is one lookup.
/// At most `keptBytes` stay idle; beyond that, dropped buffers are freed. Any thread may take and drop buffers.
final class PinnedMemory: @unchecked Sendable {
    private let driver: CUDADriver
    private let context: OpaquePointer?
    private let keptBytes: Int
    private let free = Locked<(buffers: [Int: [UnsafeMutableRawPointer]], bytes: Int)>(([:], 0))

    init(driver: CUDADriver, context: OpaquePointer?, keptBytes: Int) {
        self.driver = driver
        self.context = context
        self.keptBytes = keptBytes
    }

    /// Sizes are rounded up to whole pages, so buffers of nearly the same size share a free list.
    private static func sizeClass(_ bytes: Int) -> Int { (max(bytes, 1) + 4095) / 4096 * 4096 }

    /// A buffer of at least `bytes` bytes (its `byteCount` is `bytes`).
    func take(bytes: Int) throws(CUDAError) -> HostBuffer {
        let size = Self.sizeClass(bytes)
        let reused = free.update { free -> UnsafeMutableRawPointer? in
            guard let pointer = free.buffers[size]?.popLast() else { return nil }
            free.bytes -= size
            return pointer
        }
        var pointer = reused
        if pointer == nil {
            try driver.call("cuCtxSetCurrent", driver.cuCtxSetCurrent(context))
            try driver.call("cuMemHostAlloc(\(size) bytes)", driver.cuMemHostAlloc(&pointer, size, 0))
        }
        return HostBuffer(pointer: pointer!, byteCount: bytes) { [self] in give(back: $0, size: size) }
    }

    private func give(back pointer: UnsafeMutableRawPointer, size: Int) {
        let kept = free.update { free -> Bool in
            guard free.bytes + size <= keptBytes else { return false }
            free.buffers[size, default: []].append(pointer)
            free.bytes += size
            return true
        }
        guard !kept else { return }
        _ = driver.cuCtxSetCurrent(context)  // freed on whichever thread drops it
        _ = driver.cuMemFreeHost(pointer)
    }
}

/// A device-to-host copy into pinned memory behind an event. The memory is not handed back before the copy is done,
/// even when nobody waits for it.
final class PendingCopy {
    let host: HostBuffer
    private let event: OpaquePointer?
    private let driver: CUDADriver
    private var finished = false

    init(event: OpaquePointer?, into host: HostBuffer, driver: CUDADriver) {
        self.event = event
        self.host = host
        self.driver = driver
    }

    var isDone: Bool { finished || driver.cuEventQuery(event) == 0 }  // CUDA_SUCCESS: the copy has run

    func wait() {
        guard !finished else { return }
        must { () throws(CUDAError) in try driver.call("cuEventSynchronize", driver.cuEventSynchronize(event)) }
        finished = true
    }

    deinit {
        wait()
        _ = driver.cuEventDestroy(event)
    }
}
