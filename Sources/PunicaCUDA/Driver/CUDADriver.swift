/// The CUDA driver API (libcuda), loaded at run time. Versioned entry points (`_v2`) are looked up by the names
/// the current headers map to.
final class CUDADriver {
    typealias Result = Int32
    typealias DevicePointer = UInt64

    let library: DynamicLibrary
    let cuInit: @convention(c) (UInt32) -> Result
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32) -> Result
    let cuCtxSetCurrent: @convention(c) (OpaquePointer?) -> Result
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<DevicePointer>, Int) -> Result
    let cuMemFree: @convention(c) (DevicePointer) -> Result
    let cuMemGetInfo: @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Result
    let cuMemHostAlloc: @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int, UInt32) -> Result
    let cuMemFreeHost: @convention(c) (UnsafeMutableRawPointer) -> Result
    let cuMemcpyHtoDAsync: @convention(c) (DevicePointer, UnsafeRawPointer, Int, OpaquePointer?) -> Result
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer, DevicePointer, Int, OpaquePointer?) -> Result
    let cuMemcpyDtoDAsync: @convention(c) (DevicePointer, DevicePointer, Int, OpaquePointer?) -> Result
    let cuMemsetD8Async: @convention(c) (DevicePointer, UInt8, Int, OpaquePointer?) -> Result
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafeRawPointer) -> Result
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, OpaquePointer?, UnsafePointer<CChar>) -> Result
    /// (config: CUlaunchConfig, function, parameters, extra): a launch with attributes (`LaunchConfig`).
    let cuLaunchKernelEx: @convention(c) (UnsafeRawPointer, OpaquePointer?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                          UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Result
    let cuFuncSetAttribute: @convention(c) (OpaquePointer?, Int32, Int32) -> Result
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Result
    let cuStreamSynchronize: @convention(c) (OpaquePointer?) -> Result
    let cuStreamWaitEvent: @convention(c) (OpaquePointer?, OpaquePointer?, UInt32) -> Result
    let cuStreamBeginCapture: @convention(c) (OpaquePointer?, Int32) -> Result
    let cuStreamEndCapture: @convention(c) (OpaquePointer?, UnsafeMutablePointer<OpaquePointer?>) -> Result
    let cuGraphInstantiateWithFlags: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, OpaquePointer?, UInt64) -> Result
    let cuGraphLaunch: @convention(c) (OpaquePointer?, OpaquePointer?) -> Result
    let cuGraphDestroy: @convention(c) (OpaquePointer?) -> Result
    let cuGraphExecDestroy: @convention(c) (OpaquePointer?) -> Result
    let cuEventCreate: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Result
    let cuEventRecord: @convention(c) (OpaquePointer?, OpaquePointer?) -> Result
    let cuEventSynchronize: @convention(c) (OpaquePointer?) -> Result
    let cuEventQuery: @convention(c) (OpaquePointer?) -> Result
    let cuEventDestroy: @convention(c) (OpaquePointer?) -> Result
    let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, OpaquePointer?, OpaquePointer?) -> Result
    private let cuGetErrorName: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
    private let cuGetErrorString: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result

    init() throws(CUDAError) {
        library = try DynamicLibrary("libcuda", candidates: ["libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                                                             "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib64/libcuda.so.1"],
                                     variable: "PUNICA_LIBCUDA")
        cuInit = try library.function("cuInit")
        cuDeviceGet = try library.function("cuDeviceGet")
        cuDeviceGetCount = try library.function("cuDeviceGetCount")
        cuDeviceGetAttribute = try library.function("cuDeviceGetAttribute")
        cuDeviceGetName = try library.function("cuDeviceGetName")
        cuDevicePrimaryCtxRetain = try library.function("cuDevicePrimaryCtxRetain")
        cuCtxSetCurrent = try library.function("cuCtxSetCurrent")
        cuMemAlloc = try library.function("cuMemAlloc_v2")
        cuMemFree = try library.function("cuMemFree_v2")
        cuMemGetInfo = try library.function("cuMemGetInfo_v2")
        cuMemHostAlloc = try library.function("cuMemHostAlloc")
        cuMemFreeHost = try library.function("cuMemFreeHost")
        cuMemcpyHtoDAsync = try library.function("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try library.function("cuMemcpyDtoHAsync_v2")
        cuMemcpyDtoDAsync = try library.function("cuMemcpyDtoDAsync_v2")
        cuMemsetD8Async = try library.function("cuMemsetD8Async")
        cuModuleLoadData = try library.function("cuModuleLoadData")
        cuModuleGetFunction = try library.function("cuModuleGetFunction")
        cuLaunchKernelEx = try library.function("cuLaunchKernelEx")
        cuFuncSetAttribute = try library.function("cuFuncSetAttribute")
        cuStreamCreate = try library.function("cuStreamCreate")
        cuStreamSynchronize = try library.function("cuStreamSynchronize")
        cuStreamWaitEvent = try library.function("cuStreamWaitEvent")
        cuStreamBeginCapture = try library.function("cuStreamBeginCapture_v2")
        cuStreamEndCapture = try library.function("cuStreamEndCapture")
        cuGraphInstantiateWithFlags = try library.function("cuGraphInstantiateWithFlags")
        cuGraphLaunch = try library.function("cuGraphLaunch")
        cuGraphDestroy = try library.function("cuGraphDestroy")
        cuGraphExecDestroy = try library.function("cuGraphExecDestroy")
        cuEventCreate = try library.function("cuEventCreate")
        cuEventRecord = try library.function("cuEventRecord")
        cuEventSynchronize = try library.function("cuEventSynchronize")
        cuEventQuery = try library.function("cuEventQuery")
        cuEventDestroy = try library.function("cuEventDestroy_v2")
        if let versioned: @convention(c) (UnsafeMutablePointer<Float>, OpaquePointer?, OpaquePointer?) -> Result = try? library.function("cuEventElapsedTime_v2") {
            cuEventElapsedTime = versioned
        } else {
            cuEventElapsedTime = try library.function("cuEventElapsedTime")
        }
        cuGetErrorName = try library.function("cuGetErrorName")
        cuGetErrorString = try library.function("cuGetErrorString")
    }

    /// Runs a driver call through the gateway: `try driver.call("cuMemAlloc_v2") { cuMemAlloc(&p, n) }`.
    func call(_ name: @autoclosure () -> String, _ result: Result) throws(CUDAError) {
        try check(name(), result) { code in
            var errorName: UnsafePointer<CChar>?
            var errorString: UnsafePointer<CChar>?
            _ = cuGetErrorName(code, &errorName)
            _ = cuGetErrorString(code, &errorString)
            return "\(string(errorName)): \(string(errorString))"
        }
    }
}

/// CUlaunchConfig: grid and block sizes, dynamic shared bytes, stream, and the attributes (Swift lays the fields out
/// in order at their natural alignment, as C does: 28 bytes of sizes, then the pointers at 32 and 40).
struct LaunchConfig {
    var gridX: UInt32, gridY: UInt32, gridZ: UInt32, blockX: UInt32, blockY: UInt32, blockZ: UInt32, sharedBytes: UInt32
    var stream: OpaquePointer?
    var attributes: UnsafeMutablePointer<LaunchAttribute>?
    var attributeCount: UInt32
}

/// CUlaunchAttribute: an id, 4 bytes of padding, a 64-byte value union (here its first int).
struct LaunchAttribute {
    var id: Int32
    var padding: Int32 = 0
    var value: (Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32)

    /// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: the kernel may start while the previous one in the
    /// stream finishes (it waits in `wait_for_previous_kernel`, common.cuh).
    static let programmaticStreamSerialization = LaunchAttribute(id: 6, value: (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
}
