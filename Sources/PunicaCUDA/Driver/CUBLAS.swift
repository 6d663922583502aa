/// cuBLAS, loaded at run time: the base-model GEMMs (fp16/bf16 in and out, float32 accumulation).
final class CUBLAS {
    let library: DynamicLibrary
    private let cublasCreate: @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
    private let cublasSetStream: @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32
    private let cublasSetWorkspace: @convention(c) (OpaquePointer?, UInt64, Int) -> Int32
    private let cublasGemmEx: @convention(c) (OpaquePointer?, Int32, Int32, Int32, Int32, Int32, UnsafeRawPointer, UInt64, Int32, Int32,
                                              UInt64, Int32, Int32, UnsafeRawPointer, UInt64, Int32, Int32, Int32, Int32) -> Int32
    private let cublasGetStatusString: @convention(c) (Int32) -> UnsafePointer<CChar>?
    private var handle: OpaquePointer?

    init(stream: OpaquePointer?, workspace: UInt64, workspaceBytes: Int) throws(CUDAError) {
        library = try DynamicLibrary("cuBLAS", candidates: [
            "libcublas.so.13", "libcublas.so.12", "libcublas.so", "/usr/local/cuda/lib64/libcublas.so.13",
            "/usr/local/cuda/lib64/libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so",
        ], variable: "PUNICA_CUBLAS")
        cublasCreate = try library.function("cublasCreate_v2")
        cublasSetStream = try library.function("cublasSetStream_v2")
        cublasSetWorkspace = try library.function("cublasSetWorkspace_v2")
        cublasGemmEx = try library.function("cublasGemmEx")
        cublasGetStatusString = try library.function("cublasGetStatusString")
        try call("cublasCreate_v2", cublasCreate(&handle))
        try call("cublasSetStream_v2", cublasSetStream(handle, stream))
        // A fixed workspace keeps cuBLAS from allocating inside captured CUDA graphs.
        try call("cublasSetWorkspace_v2", cublasSetWorkspace(handle, workspace, workspaceBytes))
    }

    /// Row-major out[m, n] = x[m, k] · w[n, k]ᵀ. In cuBLAS's column-major terms: outᵀ[n, m] = w[n, k] · xᵀ,
    /// i.e. op(A) = Aᵀ with A = w as a column-major k×n matrix, and B = x as a column-major k×m matrix.
    func matmul(x: UInt64, w: UInt64, out: UInt64, m: Int, n: Int, k: Int, dataType: Int32) throws(CUDAError) {
        var alpha: Float = 1, beta: Float = 0
        let transpose: Int32 = 1, none: Int32 = 0, compute32F: Int32 = 68, defaultAlgorithm: Int32 = -1
        try call("cublasGemmEx(m: \(m), n: \(n), k: \(k))", cublasGemmEx(
            handle, transpose, none, Int32(n), Int32(m), Int32(k), &alpha, w, dataType, Int32(k), x, dataType, Int32(k),
            &beta, out, dataType, Int32(n), compute32F, defaultAlgorithm))
    }

    private func call(_ name: @autoclosure () -> String, _ result: Int32) throws(CUDAError) {
        try check(name(), result) { string(cublasGetStatusString($0)) }
    }
}
