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

    /// PyTorch's spelling ("float32", "float16", "bfloat16"), as vLLM's options and metrics write types.
    public var torchName: String {
        switch self {
        case .float32: "float32"
        case .float16: "float16"
        case .bfloat16: "bfloat16"
        }
    }
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

    /// Round-to-nearest-even, as `Float16(value).bitPattern` (a library call on x86, several times slower): integer
    /// steps that vectorize. Normal results round by adding half an ulp (less one, plus the kept lowest bit) before
    /// the shift; subnormal ones by adding 0.5, whose float32 ulp is float16's subnormal step 2⁻²⁴.
    @inline(__always)
    public static func float16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let magnitude = bits & 0x7FFF_FFFF
        let result: UInt32
        if magnitude >= 0x4780_0000 {  // ≥ 65536, ∞ or NaN
            result = magnitude > 0x7F80_0000 ? 0x7E00 : 0x7C00
        } else if magnitude < 0x3880_0000 {  // below 2⁻¹⁴: subnormal or zero
            let half = Float(0.5)
            result = (Float(bitPattern: magnitude) + half).bitPattern - half.bitPattern
        } else {  // rebias the exponent (−112 << 23) and round
            result = (magnitude &+ 0xC800_0FFF &+ ((magnitude >> 13) & 1)) >> 13
        }
        return sign | UInt16(truncatingIfNeeded: result)
    }

    /// Round-to-nearest-even, as torch does when casting float32 to bfloat16.
    @inline(__always)
    public static func bfloat16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return 0x7FC0 }
        let rounding: UInt32 = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }

    /// Converts `count` elements of `dtype` at `source` (unaligned) into `target` at `destination`, each multiplied
    /// by `scale`, in one pass: an adapter's weights from checkpoint to device type, its scale folded in. Stops at the
    /// first scaled value that is NaN or beyond ±`limit` and returns its index (the elements before it are written).
    public static func convert(_ source: UnsafeRawPointer, dtype: DType, count: Int, scale: Float, limit: Float,
                               into destination: UnsafeMutableRawPointer, as target: DType) -> Int? {
        switch dtype {
        case .float32: convert(count, scale, limit, destination, target) { Float(bitPattern: source.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) }
        case .float16: convert(count, scale, limit, destination, target) { float(float16: source.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) }
        case .bfloat16: convert(count, scale, limit, destination, target) { float(bfloat16: source.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) }
        }
    }

    @inline(__always)
    private static func convert(_ count: Int, _ scale: Float, _ limit: Float, _ destination: UnsafeMutableRawPointer, _ target: DType,
                                load: (Int) -> Float) -> Int? {
        @inline(__always) func each(_ store: (Int, Float) -> Void) -> Int? {
            for i in 0..<count {
                let value = load(i) * scale
                guard value.magnitude <= limit else { return i }  // false for NaN
                store(i, value)
            }
            return nil
        }
        switch target {
        case .float32:
            let out = destination.assumingMemoryBound(to: Float.self)
            return each { out[$0] = $1 }
        case .float16:
            let out = destination.assumingMemoryBound(to: UInt16.self)
            return each { out[$0] = float16($1) }
        case .bfloat16:
            let out = destination.assumingMemoryBound(to: UInt16.self)
            return each { out[$0] = bfloat16($1) }
        }
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
