import Dispatch
import PunicaCompute

/// An adapter read from its directory and converted for a model's backend, in host memory: the host tier's entry.
/// All its weights sit in one buffer of the backend's weight type, laid out as its device slab will be, B already
/// scaled, so uploading it (`LoRAAdapter(_:backend:)`) is one allocation and one copy. Of a model split by tensor
/// parallelism, one such slab per rank, each of that rank's part (`Shard`) for that rank's backend.
public final class HostAdapter: @unchecked Sendable {
    public let name: String
    public let directory: String
    public let rank: Int
    public let scale: Float
    public let targets: Set<Projection>
    /// [model rank]: its slab.
    let slabs: [Slab]

    struct Slab {
        let buffer: HostBuffer
        /// [layer][FusedProjection.rawValue]: where the fused A ([parts · rank, in], the parts' A stacked) and each
        /// piece's B ([out, rank]) lie in `buffer`, in elements; nil where no part is targeted.
        let layout: [[FusedSlab?]]
    }

    struct FusedSlab {
        struct Piece {
            let b: (offset: Int, shape: [Int])
            let rankOffset: Int
            let outputOffset: Int
        }

        let a: (offset: Int, shape: [Int])
        let pieces: [Piece]
    }

    public var byteCount: Int { slabs.reduce(0) { $0 + $1.buffer.byteCount } }

    /// Tensors start on 256-byte boundaries, as device allocations do.
    static let alignmentBytes = 256

    /// Reads `directory` (the safetensors file memory-mapped) and converts every tensor in one pass from its
    /// checkpoint type to the backend's weight type, B times the scale, checking each value on the way (finite and
    /// within ±`LoRAAdapter.maxValue`). Tensors convert in parallel. Any thread may call it.
    public convenience init(name: String, directory: String, config: ModelConfig, backend: Backend) throws {
        try self.init(name: name, directory: directory, config: config, ranks: [(backend, .whole)])
    }

    /// The same for each rank of a split model: a slab of its part for its backend.
    public init(name: String, directory: String, config: ModelConfig, ranks: [(backend: Backend, shard: Shard)]) throws {
        let parsed = try LoRAAdapter.parse(directory: directory, config: config)
        slabs = try ranks.map { try Self.slab(parsed, config: config, backend: $0.backend, shard: $0.shard) }
        self.name = name
        self.directory = directory
        rank = parsed.rank
        scale = parsed.scale
        targets = parsed.targets
    }

    private static func slab(_ parsed: LoRAAdapter.Parsed, config: ModelConfig, backend: Backend, shard: Shard) throws -> Slab {
        let (rank, tensors, dtype) = (parsed.rank, parsed.tensors, backend.weightDType)
        let alignment = Self.alignmentBytes / dtype.byteSize
        var end = 0  // elements laid out so far
        // A job converts one run of consecutive elements of a tensor (all of it, or a run of this shard's slice).
        var jobs: [(tensor: TensorData, matrix: LoRATensors.Matrix, run: (start: Int, count: Int), offset: Int)] = []
        func place(_ tensor: TensorData, _ matrix: LoRATensors.Matrix, _ slice: WeightSlice) -> Int {
            defer { for run in slice.runs(of: tensor.shape) { jobs.append((tensor, matrix, run, end)); end += run.count } }
            return end
        }
        func align() { end = (end + alignment - 1) / alignment * alignment }
        let layout = try config.fusedLoRALayout(targets: parsed.targets, rank: rank, shard: shard).map { layer in
            try layer.map { fused in
                try fused.map { parts -> FusedSlab in
                    // The parts' A back to back: together they are the fused A.
                    let aOffset = end
                    for part in parts { _ = place(try tensors.require(part.key, matrix: .a, shape: part.aShape), .a, part.aSlice) }
                    align()
                    return FusedSlab(a: (aOffset, [parts.count * rank, parts[0].inputs]), pieces: try parts.map { part in
                        let offset = place(try tensors.require(part.key, matrix: .b, shape: part.bShape), .b, part.bSlice)
                        align()
                        return FusedSlab.Piece(b: (offset, [part.outputs, rank]), rankOffset: part.rankOffset, outputOffset: part.outputOffset)
                    })
                }
            }
        }
        let buffer = try backend.hostBuffer(bytes: end * dtype.byteSize)
        let failures = UnsafeMutableBufferPointer<Int>.allocate(capacity: jobs.count)
        defer { failures.deallocate() }
        DispatchQueue.concurrentPerform(iterations: jobs.count) { index in
            let job = jobs[index]
            let failure = HalfConversion.convert(job.tensor.bytes + job.run.start * job.tensor.dtype.byteSize, dtype: job.tensor.dtype,
                                                 count: job.run.count, scale: tensors.factor(job.matrix), limit: LoRAAdapter.maxValue,
                                                 into: buffer.pointer + job.offset * dtype.byteSize, as: dtype)
            failures[index] = failure.map { job.run.start + $0 } ?? -1
        }
        if let first = failures.firstIndex(where: { $0 >= 0 }) {
            let (tensor, element) = (jobs[first].tensor, failures[first])
            throw ModelError.tensorValue(path: tensors.path, tensor: tensor.name, element: element, value: tensor.value(at: element),
                                         rule: tensors.rule(jobs[first].matrix))
        }
        return Slab(buffer: buffer, layout: layout)
    }

    private init(name: String, buffer: HostBuffer) {
        self.name = name
        directory = ""
        rank = 0
        scale = 1
        targets = []
        slabs = [Slab(buffer: buffer, layout: [])]
    }

    /// An adapter with no weights holding `bytes` of host memory: for runners that script a model (engine tests).
    public static func empty(name: String, bytes: Int) -> HostAdapter { HostAdapter(name: name, buffer: HostBuffer(byteCount: bytes)) }
}

/// One targeted part of a fused projection: its checkpoint key, its A [rank, in] and B [out, rank] as the checkpoint
/// has them and the parts of them a shard holds, where its rank rows sit in the fused A and where its outputs sit in
/// the (shard's) fused output row.
struct FusedLoRAPart {
    let key: LoRATensorKey
    let aShape: [Int], aSlice: WeightSlice
    let bShape: [Int], bSlice: WeightSlice
    let rankOffset: Int
    let outputOffset: Int

    /// The shard's input and output widths.
    var inputs: Int { aSlice.shape(of: aShape)[1] }
    var outputs: Int { bSlice.shape(of: bShape)[0] }
}

extension ModelConfig {
    /// [layer][FusedProjection.rawValue]: the targeted parts of each fused projection, nil where none is targeted.
    /// A shard's B takes the rows its weight takes (column-parallel), or its A the columns (row-parallel).
    func fusedLoRALayout(targets: Set<Projection>, rank: Int, shard: Shard = .whole) -> [[[FusedLoRAPart]?]] {
        (0..<layerCount).map { layer in
            FusedProjection.allCases.map { fused in
                var parts: [FusedLoRAPart] = []
                var outputOffset = 0
                for projection in fused.parts(self) {
                    let (outputs, inputs) = projection.weightShape(self)
                    let slice = shard.slice(projection, self)
                    let (aSlice, bSlice) = Shard.isRowParallel(projection) ? (slice, .whole(rows: outputs)) : (.whole(rows: rank), slice)
                    if targets.contains(projection) {
                        parts.append(FusedLoRAPart(key: LoRATensorKey(layer: layer, projection: projection), aShape: [rank, inputs],
                                                   aSlice: aSlice, bShape: [outputs, rank], bSlice: bSlice,
                                                   rankOffset: parts.count * rank, outputOffset: outputOffset))
                    }
                    outputOffset += slice.shape(of: [outputs, inputs])[0]
                }
                return parts.isEmpty ? nil : parts
            }
        }
    }
}
