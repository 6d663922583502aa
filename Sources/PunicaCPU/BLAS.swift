#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A CBLAS library (OpenBLAS preferred) found at run time with dlopen, so the package builds and runs without one.
///
/// Search order: `PUNICA_BLAS` (a path, or `none` to disable BLAS; a path that fails to load is an error, never
/// skipped), then libopenblas.so.0, libopenblas.so, libblas.so.3, libcblas.so.3 — each used only if it exports
/// `cblas_sgemm`.
public enum BLAS {
    /// The library in use, for logs and benchmarks: what was opened, plus OpenBLAS's build string when it has one.
    public struct Library: Sendable {
        public let name: String
        public let config: String?
        let sgemm: CblasSgemm
    }

    public enum LoadError: Error, CustomStringConvertible {
        case cannotOpen(path: String, reason: String)
        case missingSgemm(path: String)

        public var description: String {
            switch self {
            case .cannotOpen(let path, let reason):
                return "PUNICA_BLAS=\(path): dlopen failed: \(reason) (set PUNICA_BLAS=none to use the built-in GEMM)"
            case .missingSgemm(let path):
                return "PUNICA_BLAS=\(path): library has no cblas_sgemm (set PUNICA_BLAS=none to use the built-in GEMM)"
            }
        }
    }

    /// The loaded library, nil when none is installed or `PUNICA_BLAS=none`.
    /// Throws when `PUNICA_BLAS` names a library that cannot be used; call this at startup to report that early.
    public static func loaded() throws -> Library? {
        try loadResult.get()
    }

    /// What GEMM dispatches to; traps with the load error's message if `PUNICA_BLAS` was set to an unusable library.
    static var library: Library? {
        do { return try loaded() } catch { fatalError("\(error)") }
    }

    // cblas_sgemm(order, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) with LP64 (32-bit) ints.
    typealias CblasSgemm = @convention(c) (
        Int32, Int32, Int32, Int32, Int32, Int32,
        Float, UnsafePointer<Float>?, Int32, UnsafePointer<Float>?, Int32,
        Float, UnsafeMutablePointer<Float>?, Int32
    ) -> Void
    static let rowMajor: Int32 = 101, noTrans: Int32 = 111, trans: Int32 = 112

    private typealias SetNumThreads = @convention(c) (Int32) -> Void
    private typealias GetConfig = @convention(c) () -> UnsafePointer<CChar>?

    private static let defaultCandidates = ["libopenblas.so.0", "libopenblas.so", "libblas.so.3", "libcblas.so.3"]

    private static let loadResult = Result(catching: findLibrary)

    private static func findLibrary() throws(LoadError) -> Library? {
        if let requested = getenv("PUNICA_BLAS").map({ String(cString: $0) }), !requested.isEmpty {
            return requested == "none" ? nil : try load(path: requested)
        }
        return defaultCandidates.lazy.compactMap { try? load(path: $0) }.first
    }

    /// Opens the CBLAS library at `path` (a file path or a soname the dynamic linker can find).
    static func load(path: String) throws(LoadError) -> Library {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw .cannotOpen(path: path, reason: dlerror().map { String(cString: $0) } ?? "unknown error")
        }
        // The handle stays open for the life of the process: the function pointers below point into it.
        guard let sgemm = dlsym(handle, "cblas_sgemm") else {
            dlclose(handle)
            throw .missingSgemm(path: path)
        }
        // GEMM calls OpenBLAS from its own threads, one block of columns each: OpenBLAS's threads would spin
        // between calls, competing with ours for the cores.
        if let setThreads = dlsym(handle, "openblas_set_num_threads") {
            unsafeBitCast(setThreads, to: SetNumThreads.self)(1)
        }
        let config = dlsym(handle, "openblas_get_config")
            .flatMap { unsafeBitCast($0, to: GetConfig.self)() }
            .map { String(cString: $0) }
        return Library(name: path, config: config, sgemm: unsafeBitCast(sgemm, to: CblasSgemm.self))
    }
}
