#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import PunicaCompute

/// A model split over ranks by tensor parallelism (`Shard`): one `LlamaModel` per rank, each on its own backend with
/// its own KV cache and adapter slots, run in lockstep. A step runs every rank's forward pass at once, each on its
/// rank's thread, and gives rank 0's logits (every rank gathers the whole vocabulary's).
public final class TensorParallelModel {
    public let ranks: [LlamaModel]
    private let threads: RankThreads

    /// The ranks of one split (rank r holding shard r of `ranks.count`, each with the collectives of one group), or
    /// one whole model.
    public convenience init(ranks: [LlamaModel]) { self.init(ranks: ranks, threads: RankThreads(count: ranks.count)) }

    private init(ranks: [LlamaModel], threads: RankThreads) {
        precondition(!ranks.isEmpty && ranks.enumerated().allSatisfy { $1.shard.rank == $0 && $1.shard.count == ranks.count },
                     "rank r of a split model holds its shard r")
        self.ranks = ranks
        self.threads = threads
    }

    /// Loads rank r's part of the checkpoint in `directory` onto `backends[r]`, the ranks communicating through
    /// `collectives[r]` (none for a single rank); throws, naming the config field, where the rank count cannot split
    /// the model. Each rank loads on its own thread, so a split checkpoint goes onto its GPUs at once.
    public convenience init(directory: String, backends: [Backend], collectives: [Collectives]?) throws {
        let config = try ModelConfig.load(directory: directory)
        let shards = try Self.shards(config, backends: backends, collectives: collectives, path: directory + "/config.json")
        let threads = RankThreads(count: shards.count)
        let loaded = threads.map { index in
            Result { try LlamaModel(directory: directory, backend: backends[index], shard: shards[index], collectives: collectives?[index]) }
        }
        self.init(ranks: try loaded.map { try $0.get() }, threads: threads)
    }

    /// Random weights (`LlamaModel.random`), split the same way: for benchmarks.
    public convenience init(random config: ModelConfig, backends: [Backend], collectives: [Collectives]?, seed: UInt64 = 0) throws {
        let shards = try Self.shards(config, backends: backends, collectives: collectives, path: "--tensor-parallel-size")
        let threads = RankThreads(count: shards.count)
        let ranks = threads.map { index in
            LlamaModel.random(config: config, backend: backends[index], seed: seed, shard: shards[index], collectives: collectives?[index])
        }
        self.init(ranks: ranks, threads: threads)
    }

    private static func shards(_ config: ModelConfig, backends: [Backend], collectives: [Collectives]?, path: String) throws -> [Shard] {
        precondition(!backends.isEmpty && (collectives.map { $0.count == backends.count } ?? (backends.count == 1)),
                     "one backend per rank, and collectives for each where there are several")
        return try Shard.all(backends.count, config: config, path: path)
    }

    public var config: ModelConfig { ranks[0].config }

    public func makeKVCaches(layout: PageLayout) -> [KVCache] { ranks.map { $0.makeKVCache(layout: layout) } }

    /// Rank r's part of each adapter: from `load(model of rank r)`.
    public func residentAdapters(_ load: (LlamaModel) throws -> [LoRAAdapter?]) rethrows -> [ResidentAdapters] {
        try ranks.map { ResidentAdapters(try load($0), layerCount: config.layerCount) }
    }

    /// One step (`LlamaModel.forward`) on every rank: the logits of `batch.logitRows`, on rank 0's backend.
    public func forward(_ batch: StepBatch, caches: [KVCache], adapters: [ResidentAdapters]) -> Tensor {
        onEveryRank { index, rank in rank.forward(rank.backend.plan(batch), cache: caches[index], adapters: adapters[index]) }[0]
    }

    /// `body(r, rank r)` for every rank at once, each on its rank's thread (a lone rank on the calling thread): the
    /// results in rank order.
    public func onEveryRank<Result>(_ body: (Int, LlamaModel) -> Result) -> [Result] {
        threads.map { body($0, ranks[$0]) }
    }
}

/// A value handed to the rank threads, which `RankThreads.map` joins before returning: never used concurrently with
/// its owner.
private struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// A thread per rank, for as long as its owner lives: `map` runs a body on every rank's thread at once and returns
/// when all are done. Ranks meet in collectives, so all must run together (a shared pool of fewer threads would wait
/// forever), and a GPU rank's thread keeps its device current.
final class RankThreads {
    /// What the threads share with their owner; they hold it, so it outlives the owner's deinit.
    private final class Shared: @unchecked Sendable {
        let start: [DispatchSemaphore]
        let done = DispatchSemaphore(value: 0)
        var body: (@Sendable (Int) -> Void)?  // set before the start signals, read after them
        var stopping = false

        init(count: Int) { start = (0..<count).map { _ in DispatchSemaphore(value: 0) } }

        /// Rank `rank`'s thread: each signal of its semaphore runs the current body once.
        func serve(rank: Int) {
            while true {
                start[rank].wait()
                if stopping { return }
                body!(rank)
                done.signal()
            }
        }
    }

    private final class Thread {
        let shared: Shared, rank: Int
        init(shared: Shared, rank: Int) { (self.shared, self.rank) = (shared, rank) }
    }

    private let shared: Shared

    init(count: Int) {
        shared = Shared(count: count)
        guard count > 1 else { return }  // a lone rank runs on the calling thread (`map`)
        for rank in 0..<count {
            var thread = pthread_t()
            let created = pthread_create(&thread, nil, { context in
                let thread = Unmanaged<Thread>.fromOpaque(context!).takeRetainedValue()
                thread.shared.serve(rank: thread.rank)
                return nil
            }, Unmanaged.passRetained(Thread(shared: shared, rank: rank)).toOpaque())
            precondition(created == 0, "pthread_create failed (\(created))")
            pthread_detach(thread)
        }
    }

    deinit {
        shared.stopping = true
        for semaphore in shared.start { semaphore.signal() }
    }

    /// `body(r)` for every rank r at once, each on its thread (a lone rank on the calling thread): the results in
    /// rank order.
    func map<Result>(_ body: (Int) -> Result) -> [Result] {
        guard shared.start.count > 1 else { return [body(0)] }
        let results = Locked<[Result?]>(Array(repeating: nil, count: shared.start.count))
        withoutActuallyEscaping(body) { body in
            let unchecked = UncheckedSendable(body)
            shared.body = { index in
                let result = unchecked.value(index)
                results.update { $0[index] = result }
            }
            for semaphore in shared.start { semaphore.signal() }
            for _ in shared.start { shared.done.wait() }
            shared.body = nil
        }
        return results.read { $0.map { $0! } }
    }
}
