import PunicaCPUKernels
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Splits independent work items across the machine's cores.
enum Parallel {
    /// Worker threads to use: `PUNICA_THREADS` if set to a positive number, else the active core count.
    static let threadCount: Int = {
        if let value = ProcessInfo.processInfo.environment["PUNICA_THREADS"], let count = Int(value), count > 0 {
            return count
        }
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    /// Runs `body(i)` for every i in 0..<count, concurrently on up to `threadCount` threads (the caller's among them),
    /// each thread taking the next index as it finishes one; inline when count == 1, from inside another `body`, or
    /// while another thread's call runs. The threads are the pool of PunicaCPUKernels/pool.c: they spin a while
    /// between calls, since waking a sleeping thread costs as much as a decode step's small GEMMs.
    static func forEach(_ count: Int, _ body: (Int) -> Void) {
        guard count > 1, threadCount > 1 else {
            for i in 0..<count { body(i) }
            return
        }
        _ = poolStarted
        withoutActuallyEscaping(body) { body in
            var body = body
            withUnsafeMutablePointer(to: &body) { pointer in
                punica_pool_run(count, { context, index in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(index)
                }, pointer)
            }
        }
    }

    private static let poolStarted: Void = punica_pool_start(Int32(threadCount))
}
