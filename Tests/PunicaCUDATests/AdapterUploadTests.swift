import PunicaCPU
import PunicaCUDA
import PunicaCompute
@testable import PunicaModel
import Testing
import TestSupport

extension CUDATests {
    /// The adapter load path on the GPU: one pass from the checkpoint to the storage type into page-locked host
    /// memory, one device allocation filled by one copy on the loader stream, which the backend's stream waits for.
    @Suite struct AdapterUploadTests {
        /// Every A and scaled B of the fixture adapter equals the CPU reference's value rounded once to the storage
        /// type, on the first upload and on a second one from the same host copy (the host tier's path); read back
        /// right after the upload, so a copy not ordered before the stream's work would show.
        @Test(arguments: CUDAOpsTests.dtypes)
        func uploadedWeightsMatchTheReference(dtype: DType) throws {
            let gpu = try #require(GPU.backends[dtype])
            let directory = Fixtures.path("models/llama-gqa")
            let config = try ModelConfig.load(directory: directory)
            let reference = try LoRAAdapter(name: "alpha", directory: directory + "/adapters/alpha", config: config, backend: CPUBackend())
            let host = try HostAdapter(name: "alpha", directory: directory + "/adapters/alpha", config: config, backend: gpu)
            func rounded(_ values: [Float]) -> [Float] {
                values.map { dtype == .bfloat16 ? HalfConversion.float(bfloat16: HalfConversion.bfloat16($0)) : Float(Float16($0)) }
            }
            let cpu = CPUBackend()
            for _ in 0..<2 {
                let adapter = LoRAAdapter(host, backend: gpu)
                for (layer, row) in adapter.weights.enumerated() {
                    for (fused, weights) in row.enumerated() {
                        let expected = try #require(reference.weights[layer][fused])
                        let weights = try #require(weights)
                        #expect(gpu.toHost(weights.a) == rounded(cpu.toHost(expected.a)), "layer \(layer) fused \(fused) A")
                        for (piece, expectedPiece) in zip(weights.pieces, expected.pieces) {
                            #expect(gpu.toHost(piece.b) == rounded(cpu.toHost(expectedPiece.b)), "layer \(layer) fused \(fused) B")
                            #expect(piece.rankOffset == expectedPiece.rankOffset && piece.outputOffset == expectedPiece.outputOffset)
                        }
                    }
                }
            }
        }
    }
}
