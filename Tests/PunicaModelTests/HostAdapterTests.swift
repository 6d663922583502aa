import PunicaCPU
import PunicaCompute
@testable import PunicaModel
import Testing
import TestSupport

/// The adapter load path: one conversion pass from checkpoint to device type with the scale folded in, one slab.
@Suite struct HostAdapterTests {
    /// Every checkpoint type to every storage type, against the plain reference (widen, multiply, round once).
    @Test(arguments: [DType.float32, .float16, .bfloat16], [DType.float32, .float16, .bfloat16])
    func convertMatchesTheReference(source: DType, target: DType) {
        var random = SplitMix64(seed: 7)
        let values = random.floats(1000, scale: 3)
        let encoded: [UInt8] = values.flatMap { value -> [UInt8] in
            switch source {
            case .float32: withUnsafeBytes(of: value.bitPattern) { Array($0) }
            case .float16: withUnsafeBytes(of: Float16(value).bitPattern) { Array($0) }
            case .bfloat16: withUnsafeBytes(of: HalfConversion.bfloat16(value)) { Array($0) }
            }
        }
        // One byte of offset: checkpoint data need not be aligned.
        let unaligned = [0] + encoded
        var widened = [Float](repeating: 0, count: values.count)
        unaligned.withUnsafeBytes { HalfConversion.toFloat32($0.baseAddress! + 1, dtype: source, count: values.count, into: &widened) }
        let expected: [UInt32] = widened.map { value in
            let scaled = value * 0.37
            return switch target {
            case .float32: scaled.bitPattern
            case .float16: UInt32(Float16(scaled).bitPattern)
            case .bfloat16: UInt32(HalfConversion.bfloat16(scaled))
            }
        }
        let out = UnsafeMutableRawPointer.allocate(byteCount: values.count * target.byteSize, alignment: 16)
        defer { out.deallocate() }
        let failed = unaligned.withUnsafeBytes {
            HalfConversion.convert($0.baseAddress! + 1, dtype: source, count: values.count, scale: 0.37, limit: 65504, into: out, as: target)
        }
        #expect(failed == nil)
        let actual: [UInt32] = (0..<values.count).map { index in
            target == .float32 ? out.load(fromByteOffset: 4 * index, as: UInt32.self) : UInt32(out.load(fromByteOffset: 2 * index, as: UInt16.self))
        }
        #expect(actual == expected)
    }

    /// The integer float16 rounding equals the library's on random bit patterns (every exponent: subnormals,
    /// overflow to ∞) and on the edges; NaN stays NaN.
    @Test func float16RoundingMatchesTheLibrary() {
        var random = SplitMix64(seed: 3)
        var values: [Float] = [0, -0, 1, -1.5, 65504, 65519.99, 65520, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, .infinity, -.infinity]
        for _ in 0..<200_000 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: random.next()))) }
        let mismatches = values.filter { !$0.isNaN && HalfConversion.float16($0) != Float16($0).bitPattern }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
        #expect(Float16(bitPattern: HalfConversion.float16(.nan)).isNaN)
    }

    /// The first value that is NaN, or beyond the limit once scaled, stops the conversion and is named.
    @Test func convertStopsAtTheFirstBadValue() {
        let out = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        defer { out.deallocate() }
        let values: [Float] = [1, 2, 30, .nan]
        let scaledPastLimit = values.withUnsafeBytes {
            HalfConversion.convert($0.baseAddress!, dtype: .float32, count: 4, scale: 10, limit: 100, into: out, as: .float32)
        }
        #expect(scaledPastLimit == 2)
        let nan = values.withUnsafeBytes {
            HalfConversion.convert($0.baseAddress!, dtype: .float32, count: 4, scale: 1, limit: 100, into: out, as: .float32)
        }
        #expect(nan == 3)
    }

    /// The fixture adapter through the host tier and its slab: every A and scaled B equals the file's values, the
    /// fused A stacks its parts' A, tensors start aligned, and the uploaded views read the same values.
    @Test func theSlabHoldsTheCheckpointsValues() throws {
        let directory = Fixtures.path("models/llama-gqa")
        let config = try ModelConfig.load(directory: directory)
        let backend = CPUBackend()
        let host = try HostAdapter(name: "alpha", directory: directory + "/adapters/alpha", config: config, backend: backend)
        let file = try SafeTensorsFile(path: directory + "/adapters/alpha/adapter_model.safetensors")
        #expect(host.rank == 4 && host.scale == 2 && host.targets == Set(FusedProjection.allCases.flatMap { $0.parts(config) }))
        func fileValues(_ layer: Int, _ projection: Projection, _ matrix: String) -> [Float] {
            let tensor = file.tensor("base_model.model.\(projection.checkpointName(layer: layer)).\(matrix).weight")!
            return (0..<tensor.elementCount).map { tensor.value(at: $0) * (matrix == "lora_B" ? host.scale : 1) }
        }
        let floats = host.slabs[0].buffer.pointer.assumingMemoryBound(to: Float.self)
        func slab(_ view: (offset: Int, shape: [Int])) -> [Float] {
            #expect(view.offset * 4 % HostAdapter.alignmentBytes == 0)
            return Array(UnsafeBufferPointer(start: floats + view.offset, count: view.shape.reduce(1, *)))
        }
        let device = LoRAAdapter(host, backend: backend)
        var checked = 0
        for layer in 0..<config.layerCount {
            for fused in FusedProjection.allCases {
                let entry = try #require(host.slabs[0].layout[layer][fused.rawValue])
                let weights = try #require(device.weights[layer][fused.rawValue])
                let stackedA = fused.parts(config).flatMap { fileValues(layer, $0, "lora_A") }
                #expect(slab(entry.a) == stackedA && backend.toHost(weights.a) == stackedA)
                #expect(entry.a.shape == [fused.parts(config).count * 4, fused.parts(config)[0].weightShape(config).inputs])
                for (index, (piece, projection)) in zip(entry.pieces, fused.parts(config)).enumerated() {
                    let b = fileValues(layer, projection, "lora_B")
                    #expect(slab(piece.b) == b && backend.toHost(weights.pieces[index].b) == b)
                    #expect(piece.rankOffset == index * 4 && weights.pieces[index].rankOffset == index * 4)
                    checked += 1
                }
            }
        }
        #expect(checked == 7 * config.layerCount)
    }
}
