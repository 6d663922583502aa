#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// NCCL, loaded at run time: collectives between the GPUs of one host for a model split by tensor parallelism.
final class NCCL {
    typealias Communicator = OpaquePointer
    let library: DynamicLibrary
    let ncclCommInitAll: @convention(c) (UnsafeMutablePointer<Communicator?>, Int32, UnsafePointer<Int32>) -> Int32
    let ncclCommDestroy: @convention(c) (Communicator?) -> Int32
    /// (send, receive, count, type, operation, communicator, stream)
    let ncclAllReduce: @convention(c) (UInt64, UInt64, Int, Int32, Int32, Communicator?, OpaquePointer?) -> Int32
    /// (send, receive, count, type, root, communicator, stream)
    let ncclBroadcast: @convention(c) (UInt64, UInt64, Int, Int32, Int32, Communicator?, OpaquePointer?) -> Int32
    let ncclGroupStart: @convention(c) () -> Int32
    let ncclGroupEnd: @convention(c) () -> Int32
    private let ncclGetErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?

    /// The standard places, then the PyPI wheels' (`nvidia-nccl-cu13`, `-cu12`: site-packages/nvidia/nccl/lib) of the
    /// usual Pythons; `PUNICA_NCCL` overrides.
    init() throws(CUDAError) {
        library = try DynamicLibrary("NCCL", candidates: ["libnccl.so.2", "libnccl.so", "/usr/local/cuda/lib64/libnccl.so.2"] + Self.wheelCandidates(),
                                     variable: "PUNICA_NCCL")
        ncclCommInitAll = try library.function("ncclCommInitAll")
        ncclCommDestroy = try library.function("ncclCommDestroy")
        ncclAllReduce = try library.function("ncclAllReduce")
        ncclBroadcast = try library.function("ncclBroadcast")
        ncclGroupStart = try library.function("ncclGroupStart")
        ncclGroupEnd = try library.function("ncclGroupEnd")
        ncclGetErrorString = try library.function("ncclGetErrorString")
    }

    /// A non-zero result becomes a `CUDAError` naming the call and NCCL's reason.
    func call(_ name: @autoclosure () -> String, _ result: Int32) throws(CUDAError) {
        try check(name(), result) { string(ncclGetErrorString($0)) }
    }

    /// libnccl.so.2 of every nvidia/nccl wheel pip installed for the system's Pythons, the user's, an active virtual or
    /// conda environment's (ROOT/python3.X/{dist,site}-packages/nvidia/nccl/lib).
    private static func wheelCandidates() -> [String] {
        let environment = ProcessInfo.processInfo.environment
        let roots = ["/usr/lib", "/usr/local/lib", "/opt/conda/lib"]
            + [environment["HOME"].map { $0 + "/.local/lib" }, environment["VIRTUAL_ENV"].map { $0 + "/lib" },
               environment["CONDA_PREFIX"].map { $0 + "/lib" }].compactMap { $0 }
        return roots.flatMap { root -> [String] in
            let pythons = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { $0.hasPrefix("python3") }.sorted()
            return pythons.flatMap { python in
                ["dist-packages", "site-packages"].map { "\(root)/\(python)/\($0)/nvidia/nccl/lib/libnccl.so.2" }
            }
        }.filter { FileManager.default.fileExists(atPath: $0) }
    }
}
