#if canImport(Glibc)
import Glibc
#endif
import PunicaCompute

/// The ranks of a split model, one per GPU of this process (each a `CUDABackend` of its own), and their NCCL
/// communicators: made together by one `ncclCommInitAll`, so the unique id stays inside the process. Each rank's
/// collectives run on its backend's stream, called from that rank's thread (`TensorParallelModel`).
public final class NCCLGroup {
    private let nccl: NCCL
    private let communicators: [NCCL.Communicator?]
    private let backends: [CUDABackend]

    /// NVLink multicast (NVLS) stays off: it needs multicast objects (cuMulticastCreate), which virtualized GPUs refuse.
    public init(backends: [CUDABackend]) throws {
        setenv("NCCL_NVLS_ENABLE", "0", 1)
        nccl = try NCCL()
        var communicators = [NCCL.Communicator?](repeating: nil, count: backends.count)
        let devices = backends.map { Int32($0.device) }
        try nccl.call("ncclCommInitAll(\(backends.count) GPUs: \(devices))", nccl.ncclCommInitAll(&communicators, Int32(backends.count), devices))
        self.communicators = communicators
        self.backends = backends
    }

    deinit { for communicator in communicators { _ = nccl.ncclCommDestroy(communicator) } }

    public func collectives(rank: Int) -> Collectives {
        NCCLCollectives(nccl: nccl, communicator: communicators[rank], backend: backends[rank], rank: rank, group: self)
    }
}

private final class NCCLCollectives: Collectives {
    let nccl: NCCL
    let communicator: NCCL.Communicator?
    let backend: CUDABackend
    let rank: Int
    let group: NCCLGroup  // keeps the communicators alive

    init(nccl: NCCL, communicator: NCCL.Communicator?, backend: CUDABackend, rank: Int, group: NCCLGroup) {
        (self.nccl, self.communicator, self.backend, self.rank, self.group) = (nccl, communicator, backend, rank, group)
    }

    func allReduceSum(_ x: Tensor) {
        let sum: Int32 = 0
        must { () throws(CUDAError) in
            try nccl.call("ncclAllReduce(\(x.shape))", nccl.ncclAllReduce(x.address, x.address, x.elementCount, Self.type(x.dtype), sum,
                                                                          communicator, backend.stream))
        }
    }

    /// Each rank's part reaches every rank by a broadcast from it (the parts may differ in width, which ncclAllGather
    /// does not allow), back to back in a scratch buffer; then each part's columns go to their place in `out`.
    func allGatherColumns(_ part: Tensor, widths: [Int], into out: Tensor) {
        precondition(part.rowWidth == widths[rank] && widths.reduce(0, +) == out.rowWidth, "all-gather of parts that do not tile \(out.shape)")
        let rows = out.rows
        let scratch = backend.allocate([rows * out.rowWidth], dtype: out.dtype, pooled: true)
        let scalar = out.dtype.byteSize
        must { () throws(CUDAError) in
            try nccl.call("ncclGroupStart", nccl.ncclGroupStart())
            var offset = 0
            for (root, width) in widths.enumerated() {
                try nccl.call("ncclBroadcast(root \(root), \(rows)×\(width))",
                              nccl.ncclBroadcast(part.address, scratch.address + UInt64(offset * scalar), rows * width, Self.type(out.dtype),
                                                 Int32(root), communicator, backend.stream))
                offset += rows * width
            }
            try nccl.call("ncclGroupEnd", nccl.ncclGroupEnd())
        }
        var (offset, column) = (0, 0)
        for width in widths {
            backend.copyColumns(from: scratch.address + UInt64(offset * scalar), rows: rows, width: width, into: out, firstColumn: column)
            offset += rows * width
            column += width
        }
    }

    /// ncclDataType_t of a tensor's elements.
    static func type(_ dtype: DType) -> Int32 {
        switch dtype {
        case .float16: 6
        case .float32: 7
        case .bfloat16: 9
        }
    }
}
