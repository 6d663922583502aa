/// Element types that appear in checkpoints and on devices.
public enum DType: String, Sendable, CustomStringConvertible {
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"

    /// Safetensors header spelling ("F32", "F16", "BF16"); nil for types this project does not load.
    public init?(safetensors name: String) { self.init(rawValue: name) }

    public var byteSize: Int {
        switch self {
        case .float32: 4
        case .float16, .bfloat16: 2
        }
    }

    public var description: String { rawValue }
}

/// Widening conversions used wherever half-precision data reaches float32 code.
public enum HalfConversion {
    @inline(__always)
    public static func float(bfloat16 bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    @inline(__always)
    public static func float(float16 bits: UInt16) -> Float {
        Float(Float16(bitPattern: bits))
    }

    /// Round-to-nearest-even, as torch does when casting float32 to bfloat16.
    @inline(__always)
    public static func bfloat16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return 0x7FC0 }
        let rounding: UInt32 = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }

    /// Converts `count` elements of `dtype` at `source` into float32 at `destination`.
    public static func toFloat32(_ source: UnsafeRawPointer, dtype: DType, count: Int, into destination: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .float32:
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count * 4)
        case .float16:
            // Checkpoint data need not be aligned: read with loadUnaligned.
            for i in 0..<count { destination[i] = float(float16: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .bfloat16:
            for i in 0..<count { destination[i] = float(bfloat16: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        }
    }
}
