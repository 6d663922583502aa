#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// NVRTC, the run-time CUDA C++ compiler, loaded at run time.
final class NVRTC {
    let library: DynamicLibrary
    let version: (major: Int32, minor: Int32)
    /// Folders holding cuda_fp16.h and friends, passed to every compilation.
    let includePaths: [String]
    private let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafePointer<CChar>, UnsafePointer<CChar>, Int32,
                                                    UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    private let nvrtcCompileProgram: @convention(c) (OpaquePointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    private let nvrtcGetProgramLogSize: @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int>) -> Int32
    private let nvrtcGetProgramLog: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>) -> Int32
    private let nvrtcGetCUBINSize: @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int>) -> Int32
    private let nvrtcGetCUBIN: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>) -> Int32
    private let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
    private let nvrtcGetErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?

    /// Standard CUDA locations first; `PUNICA_NVRTC` (the library) and `PUNICA_CUDA_INCLUDE` (headers) override.
    /// Headers default to the `include` folder beside the library's `lib` folder (CUDA toolkits and the PyPI wheels).
    init() throws(CUDAError) {
        library = try DynamicLibrary("NVRTC", candidates: [
            "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13",
            "/usr/local/cuda/lib64/libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so",
        ], variable: "PUNICA_NVRTC")
        nvrtcCreateProgram = try library.function("nvrtcCreateProgram")
        nvrtcCompileProgram = try library.function("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try library.function("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try library.function("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try library.function("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try library.function("nvrtcGetCUBIN")
        nvrtcDestroyProgram = try library.function("nvrtcDestroyProgram")
        nvrtcGetErrorString = try library.function("nvrtcGetErrorString")
        let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32 = try library.function("nvrtcVersion")
        var (major, minor): (Int32, Int32) = (0, 0)
        _ = nvrtcVersion(&major, &minor)
        version = (major, minor)
        let environment = ProcessInfo.processInfo.environment
        let besideLibrary = URL(fileURLWithPath: library.path).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("include").path
        includePaths = [environment["PUNICA_CUDA_INCLUDE"], library.path.contains("/") ? besideLibrary : nil,
                        "/usr/local/cuda/include"].compactMap { $0 }
    }

    /// Compiles `source` (with `headers` available to #include by name) to a cubin for `architecture` (e.g. sm_90).
    func compile(name: String, source: String, headers: [String: String], architecture: String, defines: [String]) throws(CUDAError) -> [UInt8] {
        let headerNames = Array(headers.keys)
        var program: OpaquePointer?
        let created = withCStrings(headerNames.map { headers[$0]! }) { contents in
            withCStrings(headerNames) { names in
                nvrtcCreateProgram(&program, source, name, Int32(headerNames.count), contents, names)
            }
        }
        try call("nvrtcCreateProgram(\(name))", created)
        defer { _ = nvrtcDestroyProgram(&program) }
        let options = ["--gpu-architecture=\(architecture)", "--std=c++17", "--use_fast_math"]
            + includePaths.map { "--include-path=\($0)" } + defines.map { "-D\($0)" }
        let compiled = withCStrings(options) { nvrtcCompileProgram(program, Int32(options.count), $0) }
        guard compiled == 0 else {
            var size = 0
            _ = nvrtcGetProgramLogSize(program, &size)
            var log = [CChar](repeating: 0, count: size + 1)
            _ = nvrtcGetProgramLog(program, &log)
            throw .compile(kernel: "\(name) (\(defines.joined(separator: " ")), \(architecture))", log: String(cString: log))
        }
        var size = 0
        try call("nvrtcGetCUBINSize(\(name))", nvrtcGetCUBINSize(program, &size))
        var cubin = [CChar](repeating: 0, count: size)
        try call("nvrtcGetCUBIN(\(name))", nvrtcGetCUBIN(program, &cubin))
        return cubin.map { UInt8(bitPattern: $0) }
    }

    private func call(_ name: String, _ result: Int32) throws(CUDAError) {
        try check(name, result) { string(nvrtcGetErrorString($0)) }
    }
}

/// Calls `body` with a C array of C strings that live for the call.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let duplicates = strings.map { strdup($0) }
    defer { duplicates.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = duplicates.map { $0.map { UnsafePointer($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
