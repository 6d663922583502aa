/// One kernel's parameters as one value, beside the kernel it launches (Kernels/*.swift).
///
/// The stored properties mirror the kernel's `extern "C"` signature: the same names (camelCase for snake_case), in
/// the same order, one C type each — `UInt64` for a pointer, `Int32` for `int`, `Float` for `float`, `UInt64` for
/// `size_t` and `unsigned long long`. Every property has a default, so `init()` exists; launches use the memberwise
/// initializer, so an argument can be neither missing nor out of order. KernelSignatureTests checks each struct
/// against its kernel's source, without a GPU.
public protocol KernelParameters {
    /// The `extern "C"` function these parameters are for.
    static var kernel: String { get }
    init()
}

/// Where each parameter of a `KernelParameters` type sits in the value's bytes: what cuLaunchKernelEx reads through
/// one pointer per parameter. Swift lays out a struct of these fixed-size types in declaration order, each at its
/// natural alignment, as C lays out the kernel's parameters; the offsets follow the same rule, once per type.
enum ParameterLayout {
    static func offsets(of type: any KernelParameters.Type) -> [Int] {
        var offset = 0
        return Mirror(reflecting: type.init()).children.map { child in
            let size = byteSize(of: child.value)
            offset = (offset + size - 1) / size * size
            defer { offset += size }
            return offset
        }
    }

    /// Size (and alignment) of one parameter; nil for a type a kernel parameter cannot have.
    static func byteSize(of value: Any) -> Int {
        switch value {
        case is UInt64: 8
        case is Int32, is Float: 4
        default: preconditionFailure("kernel parameters are UInt64, Int32 or Float, not \(type(of: value))")
        }
    }
}
