#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A shared library opened at run time, so the package builds and runs without CUDA installed.
final class DynamicLibrary {
    let path: String
    private let handle: UnsafeMutableRawPointer

    /// Opens the first loadable candidate; `variable`, when set in the environment, is the only one tried.
    init(_ library: String, candidates: [String], variable: String) throws(CUDAError) {
        let override = ProcessInfo.processInfo.environment[variable].flatMap { $0.isEmpty ? nil : $0 }
        let tried = override.map { [$0] } ?? candidates
        for candidate in tried {
            if let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) {
                self.path = candidate
                self.handle = handle
                return
            }
        }
        throw .libraryNotFound(library: library, tried: tried, variable: variable)
    }

    /// The C function `name`, typed as `T` (a `@convention(c)` function type).
    func function<T>(_ name: String, as type: T.Type = T.self) throws(CUDAError) -> T {
        guard let symbol = dlsym(handle, name) else { throw .missingSymbol(library: path, symbol: name) }
        return unsafeBitCast(symbol, to: type)
    }
}

/// Every failure of the CUDA layer, naming the library, call or kernel.
public enum CUDAError: Error, CustomStringConvertible {
    case libraryNotFound(library: String, tried: [String], variable: String)
    case missingSymbol(library: String, symbol: String)
    case call(String, code: Int32, message: String)
    case compile(kernel: String, log: String)
    case unsupported(String)

    public var description: String {
        switch self {
        case let .libraryNotFound(library, tried, variable):
            "\(library) could not be loaded (tried \(tried.joined(separator: ", ")); set \(variable) to its path)"
        case let .missingSymbol(library, symbol):
            "\(library) has no symbol \(symbol)"
        case let .call(call, code, message):
            "\(call) failed with \(code): \(message)"
        case let .compile(kernel, log):
            "NVRTC could not compile \(kernel):\n\(log)"
        case let .unsupported(reason):
            reason
        }
    }
}

/// The one gateway for foreign calls: a non-zero result becomes a `CUDAError` naming the call.
@inline(__always)
func check(_ call: @autoclosure () -> String, _ result: Int32, describe: (Int32) -> String) throws(CUDAError) {
    if result != 0 { throw CUDAError.call(call(), code: result, message: describe(result)) }
}

/// A C string returned by a library, or a placeholder when it gave none.
func string(_ pointer: UnsafePointer<CChar>?) -> String {
    pointer.map { String(cString: $0) } ?? "no description"
}
