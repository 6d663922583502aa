#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PunicaCompute

/// Collectives between CPU ranks: threads of one process, each running one rank of a split model on its own
/// `CPUBackend`. Ranks hand each other their tensors' memory: each collective publishes them, waits for every rank,
/// works on its share, and waits again, so that no rank's tensor is reused while another still reads it.
public final class CPUGroup: @unchecked Sendable {
    public let size: Int
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var arrived = 0, generation = 0
    /// Each rank's tensor of the collective in progress.
    private var published: [Tensor?]

    public init(size: Int) {
        precondition(size >= 1, "a group has at least one rank")
        self.size = size
        published = Array(repeating: nil, count: size)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    /// The collectives rank `rank` calls.
    public func collectives(rank: Int) -> Collectives {
        precondition((0..<size).contains(rank), "rank \(rank) is not in a group of \(size)")
        return CPUCollectives(group: self, rank: rank)
    }

    /// Returns once every rank has called it as often as this one.
    fileprivate func barrier() {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        let current = generation
        arrived += 1
        if arrived == size {
            arrived = 0
            generation += 1
            pthread_cond_broadcast(&condition)
        } else {
            while generation == current { pthread_cond_wait(&condition, &mutex) }
        }
    }

    /// Every rank's tensor once all have published theirs (`rank`'s being `tensor`).
    fileprivate func exchange(_ tensor: Tensor, rank: Int) -> [Tensor] {
        pthread_mutex_lock(&mutex)
        published[rank] = tensor
        pthread_mutex_unlock(&mutex)
        barrier()
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return published.map { $0! }
    }
}

private final class CPUCollectives: Collectives {
    let group: CPUGroup
    let rank: Int

    init(group: CPUGroup, rank: Int) {
        self.group = group
        self.rank = rank
    }

    /// Each rank sums its share of the elements over every rank's tensor and writes the sum into all of them.
    func allReduceSum(_ x: Tensor) {
        let tensors = group.exchange(x, rank: rank)
        let (count, size) = (x.elementCount, group.size)
        precondition(tensors.allSatisfy { $0.elementCount == count }, "all-reduce of tensors of different sizes")
        let share = rank * count / size ..< (rank + 1) * count / size
        let pointers = tensors.map(\.floats)
        for i in share {
            var sum: Float = 0
            for pointer in pointers { sum += pointer[i] }
            for pointer in pointers { pointer[i] = sum }
        }
        group.barrier()
    }

    func allGatherColumns(_ part: Tensor, widths: [Int], into out: Tensor) {
        let parts = group.exchange(part, rank: rank)
        precondition(parts.allSatisfy { $0.rows == out.rows } && parts.map(\.rowWidth) == widths && widths.reduce(0, +) == out.rowWidth,
                     "all-gather of parts that do not tile \(out.shape) as \(widths)")
        var column = 0
        for part in parts {
            let width = part.rowWidth
            for row in 0..<out.rows { (out.floats + row * out.rowWidth + column).update(from: part.floats + row * width, count: width) }
            column += width
        }
        group.barrier()
    }
}
