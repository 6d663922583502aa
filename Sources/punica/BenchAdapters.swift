import ArgumentParser
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCUDA
import PunicaCompute
import PunicaModel

/// `punica bench adapters`: how long an adapter takes to become usable by a step, the engine's load path measured
/// piece by piece: read and convert into host memory (`HostAdapter`, the safetensors file memory-mapped and in the
/// page cache), upload into one device allocation (`LoRAAdapter(_:backend:)`), and the upload alone from the host tier.
struct BenchAdapters: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adapters",
        abstract: "Adapter load time: cold (disk, page cache warm) to the device, from the host tier, several loads at once.")

    @OptionGroup var device: DeviceOptions
    @Option(help: "A model directory whose config.json gives the shapes (its weights are not read); default: --shape.")
    var model: String?
    @Option(help: "Model shape without --model: \(BenchShape.allCases.map(\.rawValue).joined(separator: ", ")).") var shape = BenchShape.llama7b
    @Option(help: "LoRA rank of the random adapters (all seven projections).") var rank = 16
    @Option(help: "Adapters per measurement, each in its own directory.") var count = 8
    @Option(parsing: .upToNextOption, help: "Loads at once (loader threads) for the concurrent measurement.") var inFlight: [Int] = [1, 4]
    @Option(help: "Where random adapters are written (reused across runs).") var cache = "/tmp/punica-bench-adapters"

    func validate() throws {
        try require(count > 0, "--count", "must be > 0", count)
        try require(rank > 0, "--rank", "must be > 0", rank)
        try require(inFlight.allSatisfy { $0 > 0 }, "--in-flight", "must be > 0", inFlight)
    }

    func run() throws {
        let backend = try device.makeBackend()
        let config = try model.map { try ModelConfig.load(directory: $0) } ?? shape.config
        let label = model.map { URL(fileURLWithPath: $0).standardized.lastPathComponent } ?? shape.rawValue
        let directories = try (0..<count).map { index in
            let directory = "\(cache)/\(label)-r\(rank)-\(index)"
            if !FileManager.default.fileExists(atPath: directory + "/adapter_model.safetensors") {
                try LoRAAdapter.writeRandom(to: directory, config: config, rank: rank, alpha: Double(2 * rank),
                                            targets: Projection.of(config), seed: UInt64(index + 1))
            }
            return directory
        }
        // The device copy is ready when the backend's stream has run past it.
        let cuda = backend as? CUDABackend
        func load(_ index: Int) throws -> HostAdapter {
            try HostAdapter(name: "a\(index)", directory: directories[index], config: config, backend: backend)
        }
        func upload(_ host: HostAdapter) -> LoRAAdapter {
            let adapter = LoRAAdapter(host, backend: backend)
            cuda?.synchronize()
            return adapter
        }
        let clock = ContinuousClock()
        // Untimed: every file once into the page cache, and one upload to warm the driver. The host copies are kept,
        // so that the backend's pool of pinned memory has nothing to hand out yet.
        var warm = try directories.indices.map { try load($0) }
        _ = upload(warm[0])
        let hostBytes = warm[0].byteCount

        // Host memory alone (page-locked on CUDA), freshly allocated: part of a cold load while nothing is pooled.
        var held: [HostBuffer] = []
        let allocation = try (0..<count).map { _ in try clock.measure { held.append(try backend.hostBuffer(bytes: hostBytes)) }.seconds * 1000 }
        var convert: [Double] = [], cold: [Double] = [], reused: [Double] = [], fromHost: [Double] = []
        var hosts: [HostAdapter] = []
        for index in directories.indices {
            var host: HostAdapter?
            let read = try clock.measure { host = try load(index) }
            let copy = clock.measure { _ = upload(host!) }
            convert.append(read.seconds * 1000)
            cold.append((read + copy).seconds * 1000)
            hosts.append(host!)
        }
        // The warm-up copies and buffers go back to the pool, as adapters leaving a full host tier do; cold loads
        // then reuse their memory.
        (warm, held) = ([], [])
        for index in directories.indices { reused.append(try clock.measure { _ = upload(try load(index)) }.seconds * 1000) }
        for host in hosts { fromHost.append(clock.measure { _ = upload(host) }.seconds * 1000) }
        let bytes = hostBytes
        print("backend: \(backend.name); \(label) shapes, rank \(rank) on all seven projections: \(fixed(Double(bytes) / 1e6, 1)) MB "
              + "per adapter in \(backend.weightDType); checkpoints float32; \(count) adapters, median ms per adapter")
        print("| path | ms per adapter |")
        print("|---|---|")
        print("| cold: host memory allocation alone (fresh) | \(fixed(median(allocation), 2)) |")
        print("| cold: read + convert to host memory (fresh allocation included) | \(fixed(median(convert), 2)) |")
        print("| cold: to the device (read, convert, upload), fresh host memory | \(fixed(median(cold), 2)) |")
        print("| cold: to the device, host memory reused from the pool | \(fixed(median(reused), 2)) |")
        // On the CPU the weights are views of the host copy: nothing is copied, so no bandwidth is shown.
        let bandwidth = cuda == nil ? "" : " (\(fixed(Double(bytes) / (median(fromHost) * 1e6), 1)) GB/s)"
        print("| host tier: upload only | \(fixed(median(fromHost), 2))\(bandwidth) |")
        hosts = []
        for loaders in inFlight {
            // `loaders` threads read and convert all adapters, thread w taking w, w + loaders, …; uploads follow on
            // this thread, as the engine's step loop does them.
            let results = UnsafeMutableBufferPointer<Result<HostAdapter, Error>?>.allocate(capacity: count)
            results.initialize(repeating: nil)
            defer { _ = results.deinitialize(); results.deallocate() }
            let elapsed = try clock.measure {
                DispatchQueue.concurrentPerform(iterations: loaders) { worker in
                    for index in stride(from: worker, to: count, by: loaders) { results[index] = Result { try load(index) } }
                }
                for result in results { _ = upload(try result!.get()) }
            }
            print("| \(loaders) loads in flight: cold to the device | \(fixed(elapsed.seconds * 1000 / Double(count), 2)) |")
        }
    }
}
