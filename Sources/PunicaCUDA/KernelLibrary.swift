#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute

/// The kernel sources (Kernels/*.cu, embedded at build time) and their compilation by NVRTC.
public enum KernelSources {
    /// Each source file with the parameters of the kernels it defines.
    static let files: [(name: String, source: [UInt8], kernels: [any KernelParameters.Type])] = [
        ("elementwise.cu", PackageResources.elementwise_cu,
         [Embedding.self, CopyColumns.self, GatherRows.self, RMSNorm.self, AddRMSNorm.self, SiluMul.self, GeluTanhMul.self, Scale.self, Softcap.self, AddBias.self, HeadRMSNorm.self, RopeAppendKV.self, ToFloat32.self,
          FillUniform.self]),
        ("attention.cu", PackageResources.attention_cu,
         [AttentionTiles<AttentionRows64>.self, AttentionTiles<AttentionRows16>.self, AttentionTiles<AttentionRows64D256>.self,
          AttentionTiles<AttentionRows16D256>.self, AttentionTiles<AttentionDecode>.self, AttentionMerge.self]),
        ("lora.cu", PackageResources.lora_cu, [SGMVShrink<SGMVOneRow>.self, SGMVShrink<SGMVFourRows>.self, SGMVShrinkMMA.self,
                                                    SGMVExpand<SGMVOneRow>.self, SGMVExpand<SGMVFourRows>.self, SGMVExpandMMA.self]),
        ("sampling.cu", PackageResources.sampling_cu, [AdjustLogits.self, SampleRows.self, FeedTokens.self]),
    ]
    static let headers = ["common.cuh": String(decoding: PackageResources.common_cuh, as: UTF8.self)]

    /// The NVRTC define that selects the storage type.
    static func scalarDefine(_ dtype: DType) throws(CUDAError) -> String {
        switch dtype {
        case .float16: "SCALAR=__half"
        case .bfloat16: "SCALAR=__nv_bfloat16"
        case .float32: throw .unsupported("the CUDA backend stores float16 or bfloat16, not float32")
        }
    }

    /// Compiles every kernel file for each storage type and architecture, returning the cubin sizes: what CI runs
    /// (without a GPU) to prove every kernel compiles.
    public static func compileAll(architectures: [String]) throws -> [String: Int] {
        let nvrtc = try NVRTC()
        var sizes: [String: Int] = [:]
        for architecture in architectures {
            for dtype in [DType.float16, .bfloat16] {
                for file in files {
                    let cubin = try nvrtc.compile(name: file.name, source: String(decoding: file.source, as: UTF8.self),
                                                  headers: headers, architecture: architecture, defines: [scalarDefine(dtype)])
                    sizes["\(file.name) \(dtype) \(architecture)"] = cubin.count
                }
            }
        }
        return sizes
    }
}

/// Every kernel compiled for one device and storage type, loaded as modules. Cubins are cached on disk under
/// `PUNICA_KERNEL_CACHE` (default ~/.cache/punica/kernels), keyed by source, options, architecture and NVRTC version.
final class KernelLibrary {
    /// A loaded kernel and where its parameters sit in a `KernelParameters` value.
    struct Kernel {
        let function: OpaquePointer
        let parameterOffsets: [Int]
    }

    private var kernels: [ObjectIdentifier: Kernel] = [:]

    init(driver: CUDADriver, architecture: String, dtype: DType) throws(CUDAError) {
        let define = try KernelSources.scalarDefine(dtype)
        let nvrtc = try NVRTC()
        let environment = ProcessInfo.processInfo.environment
        let cacheDirectory = environment["PUNICA_KERNEL_CACHE"] ?? ((environment["HOME"] ?? "/tmp") + "/.cache/punica/kernels")
        try? FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        for file in KernelSources.files {
            let source = String(decoding: file.source, as: UTF8.self)
            let key = fnv1a([source, KernelSources.headers.values.joined(), define, architecture,
                             "\(nvrtc.version.major).\(nvrtc.version.minor)"].joined(separator: "\u{0}"))
            let cachePath = "\(cacheDirectory)/\(file.name)-\(key).cubin"
            let cubin: [UInt8]
            if let cached = FileManager.default.contents(atPath: cachePath) {
                cubin = [UInt8](cached)
            } else {
                cubin = try nvrtc.compile(name: file.name, source: source, headers: KernelSources.headers,
                                          architecture: architecture, defines: [define])
                // A failed write only costs a recompilation next time.
                try? Data(cubin).write(to: URL(fileURLWithPath: cachePath))
            }
            var module: OpaquePointer?
            try driver.call("cuModuleLoadData(\(file.name))", cubin.withUnsafeBytes { driver.cuModuleLoadData(&module, $0.baseAddress!) })
            for parameters in file.kernels {
                var function: OpaquePointer?
                try driver.call("cuModuleGetFunction(\(parameters.kernel))", driver.cuModuleGetFunction(&function, module, parameters.kernel))
                kernels[ObjectIdentifier(parameters)] = Kernel(function: function!, parameterOffsets: ParameterLayout.offsets(of: parameters))
            }
        }
    }

    subscript<P: KernelParameters>(_ parameters: P.Type) -> Kernel {
        guard let kernel = kernels[ObjectIdentifier(parameters)] else { preconditionFailure("\(P.kernel) is not in KernelSources.files") }
        return kernel
    }
}

/// 64-bit FNV-1a, as hex: a stable cache key (not a security hash).
func fnv1a(_ text: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x100_0000_01b3
    }
    return String(hash, radix: 16)
}
