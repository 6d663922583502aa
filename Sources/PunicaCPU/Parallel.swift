import Dispatch
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

    /// Runs `body(i)` for every i in 0..<count, concurrently on up to `threadCount` threads; inline when count == 1.
    /// Items are dealt round-robin, so callers that want balance pass a multiple of `threadCount` equal items.
    static func forEach(_ count: Int, _ body: (Int) -> Void) {
        let workers = min(count, threadCount)
        if workers <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for i in stride(from: worker, to: count, by: workers) { body(i) }
        }
    }
}
