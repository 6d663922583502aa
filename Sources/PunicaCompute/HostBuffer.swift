#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Host memory made by a backend for data on its way to the device (`Backend.hostBuffer`): page-locked on CUDA, so
/// a copy from it needs no staging and runs beside the step; plain aligned memory on the CPU.
public final class HostBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let byteCount: Int
    private let release: (UnsafeMutableRawPointer) -> Void

    /// Memory that `release` frees when the buffer goes.
    public init(pointer: UnsafeMutableRawPointer, byteCount: Int, release: @escaping (UnsafeMutableRawPointer) -> Void) {
        self.pointer = pointer
        self.byteCount = byteCount
        self.release = release
    }

    /// Plain host memory, 64-byte aligned.
    public convenience init(byteCount: Int) {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        self.init(pointer: pointer, byteCount: byteCount) { $0.deallocate() }
    }

    deinit { release(pointer) }
}
