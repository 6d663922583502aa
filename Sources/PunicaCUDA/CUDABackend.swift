#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute

/// Device memory behind a tensor. Activations come from (and return to) a pool; weights are allocated exactly. A
/// view lies inside another storage, which it keeps alive (an adapter's weights in its slab).
final class CUDAStorage: TensorStorage {
    let address: UInt64
    let bytes: Int
    private let memory: DeviceMemory
    private let pool: DeviceMemory.Pool?
    private let owner: CUDAStorage?

    init(bytes: Int, memory: DeviceMemory, pooled: Bool) {
        self.bytes = bytes
        self.memory = memory
        pool = pooled ? memory.currentPool : nil
        address = memory.allocate(bytes, pool: pool)
        owner = nil
    }

    init(viewing owner: CUDAStorage, byteOffset: Int, bytes: Int) {
        precondition(byteOffset >= 0 && byteOffset + bytes <= owner.bytes, "a view lies inside its storage")
        self.bytes = bytes
        memory = owner.memory
        pool = nil
        address = owner.address + UInt64(byteOffset)
        self.owner = owner
    }

    deinit { if owner == nil { memory.release(address, bytes: bytes, pool: pool) } }
}

/// cuMemAlloc is slow and synchronizing, so per-step buffers are recycled by power-of-two size class. Reuse is safe
/// without events because every kernel runs on the backend's one stream, in order (LoRA shrinks, on a stream of their
/// own, touch only their projection's input and `v`, which live through the step, and the step stream waits for them).
///
/// Buffers allocated while a step is recorded come from a pool of their own: a replay writes them at any later time,
/// so no eager step may ever get one. Recordings share that pool, as their replays run one at a time.
final class DeviceMemory {
    enum Pool { case steps, recordings }

    private let driver: CUDADriver
    private var free: [Pool: [Int: [UInt64]]] = [.steps: [:], .recordings: [:]]
    var recording = false

    init(driver: CUDADriver) { self.driver = driver }

    var currentPool: Pool { recording ? .recordings : .steps }

    static func sizeClass(_ bytes: Int) -> Int { max(512, 1 << (Int.bitWidth - (max(bytes, 1) - 1).leadingZeroBitCount)) }

    func allocate(_ bytes: Int, pool: Pool?) -> UInt64 {
        let size = pool != nil ? Self.sizeClass(bytes) : max(bytes, 1)
        if let pool, let address = free[pool]![size]?.popLast() { return address }
        var address: UInt64 = 0
        must { () throws(CUDAError) in try driver.call("cuMemAlloc_v2(\(size) bytes)", driver.cuMemAlloc(&address, size)) }
        return address
    }

    func release(_ address: UInt64, bytes: Int, pool: Pool?) {
        if let pool {
            free[pool]![Self.sizeClass(bytes), default: []].append(address)
        } else {
            _ = driver.cuMemFree(address)
        }
    }
}

/// A CUDA failure inside an op (which cannot throw) is a device fault: stop with the call that failed.
func must(_ body: () throws(CUDAError) -> Void) {
    do {
        try body()
    } catch {
        fatalError("CUDA: \(error)")
    }
}

extension Tensor {
    var address: UInt64 {
        guard let storage = storage as? CUDAStorage else { preconditionFailure("tensor \(shape) was not made by the CUDA backend") }
        return storage.address
    }
}

/// A step's metadata in one device buffer of int32 sections, uploaded once and read by every layer.
///
/// An eager step's plan is sized to its batch. A recorded step's plan (`fixed`) has a fixed shape — `rows` decode
/// rows, block tables of `maxPages` — and keeps its buffer: each replay refills it in place.
final class CUDAPlan: StepPlan {
    private(set) var batch: StepBatch
    let buffer: Tensor
    let maxPages: Int
    /// The tiles of the plan's table (index ranges) that one way of running a step's SGMV launches.
    struct LoRAGrid {
        /// The CUDA-core shrink's tiles, the longest `shrinkRows` rows (1: the one-row entry point).
        var shrink: Range<Int>, shrinkRows: Int
        /// The tensor-core shrink's and expand's tiles, of `SGMVShrinkMMA.tileRows` rows.
        var tensorCore: Range<Int>
        /// The CUDA-core expand's tiles, of at most `expandRows` rows: 1 when every segment it covers is one row, else 4
        /// (a block per tile and 128 output columns, so no block is launched for rows a tile lacks).
        var expand: Range<Int>, expandRows: Int
    }
    /// LoRA segments cut into tiles, two ways. On CUDA cores alone: the shrink takes tiles of at most `loraTileRows`
    /// rows, shorter while that gives fewer than two tiles per multiprocessor (more blocks, each re-reading its
    /// adapter from L2), the expand tiles of up to 4 rows. With tensor cores: segments of at least
    /// `tensorCoreSegmentRows` rows (prefill, many rows on one adapter) are small GEMMs, in tiles of
    /// `SGMVShrinkMMA.tileRows` rows for the tensor-core shrink and expand; the others as on CUDA cores. A fixed plan
    /// has one-row tiles, one per row (those past the segments empty), shared by shrink and expand, and no tensor-core
    /// tiles.
    let loraOnCUDACores: LoRAGrid, loraWithTensorCores: LoRAGrid
    /// Rows of the segments the tensor-core kernels would take.
    let loraTensorCoreRows: Int
    /// The longest CUDA-core tile: shorter tiles make more blocks while few rows share an adapter.
    static let loraTileRows = 16
    /// The shortest segment the tensor-core kernels take: one 16-row mma block.
    static let tensorCoreSegmentRows = 16
    /// Tensor cores pay once their segments' rows × the projection's rank reach this: below it their fixed cost
    /// (zeroing v, split-K atomics, few blocks) loses to the CUDA-core kernels (`punica bench lora` on an H200, 4096
    /// wide: rank 16 wins on CUDA cores at 256 rows of one adapter, 14 against 19 µs; rank 64 on tensor cores from 128,
    /// 18 against 23 µs; docs/PERFORMANCE.md).
    static let tensorCoreWork = 8192

    /// The grid for a projection whose adapters have ranks up to `rank`.
    func loraGrid(rank: Int) -> LoRAGrid {
        loraTensorCoreRows * rank >= Self.tensorCoreWork ? loraWithTensorCores : loraOnCUDACores
    }

    let fixed: (rows: Int, withLoRA: Bool, attentionSplits: Int)?
    /// Element offsets of each section in `buffer`.
    let tokens, positions, rowSequence, blockTables, tileStart, tileEnd, tileSlot, logitRows: Int

    /// An eager step's plan.
    init(_ batch: StepBatch, backend: CUDABackend) {
        let maxPages = max(1, batch.sequences.map(\.blockTable.count).max() ?? 1)
        let long = batch.loraSegments.filter { $0.rows.count >= Self.tensorCoreSegmentRows }
        let short = batch.loraSegments.filter { $0.rows.count < Self.tensorCoreSegmentRows }
        var table: [(start: Int, end: Int, slot: Int)] = []
        func append(_ tiles: [(start: Int, end: Int, slot: Int)]) -> Range<Int> {
            table += tiles
            return table.count - tiles.count ..< table.count
        }
        // The CUDA-core grid of `segments`, with `tensorCore` tiles for the rest.
        func grid(_ segments: [LoRASegment], tensorCore: Range<Int>) -> LoRAGrid {
            var tileRows = Self.loraTileRows
            while tileRows > 1 && Self.tiles(segments, rows: tileRows).count < 2 * backend.multiprocessorCount { tileRows /= 2 }
            let shrink = Self.tiles(segments, rows: tileRows)
            let expandRows = segments.allSatisfy { $0.rows.count == 1 } ? SGMVOneRow.rows : SGMVFourRows.rows
            return LoRAGrid(shrink: append(shrink), shrinkRows: shrink.map { $0.end - $0.start }.max() ?? 1, tensorCore: tensorCore,
                            expand: append(Self.tiles(segments, rows: expandRows)), expandRows: expandRows)
        }
        loraOnCUDACores = grid(batch.loraSegments, tensorCore: 0..<0)
        loraWithTensorCores = long.isEmpty ? loraOnCUDACores : grid(short, tensorCore: append(Self.tiles(long, rows: SGMVShrinkMMA.tileRows)))
        loraTensorCoreRows = long.reduce(0) { $0 + $1.rows.count }
        let sections = Self.sections(batch, maxPages: maxPages, tiles: table, tileCapacity: table.count)
        self.batch = batch
        self.maxPages = maxPages
        fixed = nil
        (tokens, positions, rowSequence, blockTables, tileStart, tileEnd, tileSlot, logitRows) = Self.offsets(sections.map(\.count))
        buffer = backend.upload(Array(sections.joined()))
    }

    /// A recorded step's plan, filled by `refill`.
    init(fixedRows rows: Int, maxPages: Int, withLoRA: Bool, attentionSplits: Int, backend: CUDABackend) {
        batch = StepBatch(tokens: [], sequences: [], loraSegments: [], logitRows: [])
        self.maxPages = maxPages
        loraOnCUDACores = LoRAGrid(shrink: 0..<rows, shrinkRows: 1, tensorCore: 0..<0, expand: 0..<rows, expandRows: SGMVOneRow.rows)
        loraWithTensorCores = loraOnCUDACores
        loraTensorCoreRows = 0
        fixed = (rows, withLoRA, attentionSplits)
        let sizes = [rows, rows, rows, rows * maxPages, rows, rows, rows, rows]
        (tokens, positions, rowSequence, blockTables, tileStart, tileEnd, tileSlot, logitRows) = Self.offsets(sizes)
        buffer = backend.float32Zeros([sizes.reduce(0, +)])  // 4-byte words
    }

    /// Puts a batch of the fixed plan's shape into its buffer (stream-ordered, so steps before still read the old one).
    func refill(_ batch: StepBatch, backend: CUDABackend) {
        guard let fixed else { preconditionFailure("only a fixed plan is refilled") }
        precondition(batch.isDecodeOnly && batch.rowCount == fixed.rows, "a fixed plan holds \(fixed.rows) decode rows")
        self.batch = batch
        let sections = Self.sections(batch, maxPages: maxPages, tiles: Self.tiles(batch.loraSegments, rows: 1), tileCapacity: fixed.rows)
        backend.copyToDevice(Array(sections.joined()).withUnsafeBytes { Array($0) }, buffer.address)
        for plan in attentionPlans.values {
            plan.refill(AttentionWork(fixedDecode: batch, shape: plan.shape, splits: fixed.attentionSplits,
                                       multiprocessors: backend.multiprocessorCount), backend: backend)
        }
    }

    func runsLoRA(_ projection: LoRAProjection) -> Bool {
        fixed.map(\.withLoRA) ?? (!batch.loraSegments.isEmpty && !projection.isEmpty)
    }

    func address(_ offset: Int) -> UInt64 { buffer.address + UInt64(4 * offset) }

    /// Device addresses of the tile starts, ends and slots from the first tile of `range` on (a kernel's tile list).
    func tileTable(_ range: Range<Int>) -> (start: UInt64, end: UInt64, slot: UInt64) {
        (address(tileStart + range.lowerBound), address(tileEnd + range.lowerBound), address(tileSlot + range.lowerBound))
    }

    /// Each segment cut into tiles of at most `rows` rows.
    private static func tiles(_ segments: [LoRASegment], rows: Int) -> [(start: Int, end: Int, slot: Int)] {
        segments.flatMap { segment in
            stride(from: segment.rows.lowerBound, to: segment.rows.upperBound, by: rows).map { start in
                (start: start, end: min(start + rows, segment.rows.upperBound), slot: segment.slot)
            }
        }
    }

    /// The buffer's sections: tokens, positions, row → sequence, block tables (`maxPages` entries each), tile starts,
    /// ends and slots (`tileCapacity` each, the unused ones empty), logit rows.
    private static func sections(_ batch: StepBatch, maxPages: Int, tiles: [(start: Int, end: Int, slot: Int)], tileCapacity: Int) -> [[Int32]] {
        var rowSequence = [Int32](repeating: 0, count: batch.rowCount)
        for (index, sequence) in batch.sequences.enumerated() {
            for row in sequence.rows { rowSequence[row] = Int32(index) }
        }
        let tables = batch.sequences.flatMap { $0.blockTable + [Int32](repeating: 0, count: maxPages - $0.blockTable.count) }
        // Unused tiles have no rows (slot 0: a valid index; the kernels do nothing for an empty tile).
        let unused = [Int32](repeating: 0, count: tileCapacity - tiles.count)
        return [batch.tokens, batch.positions, rowSequence, tables, tiles.map { Int32($0.start) } + unused, tiles.map { Int32($0.end) } + unused,
                tiles.map { Int32($0.slot) } + unused, batch.logitRows.map(Int32.init)]
    }

    private static func offsets(_ sizes: [Int]) -> (Int, Int, Int, Int, Int, Int, Int, Int) {
        let starts = sizes.indices.map { sizes[..<$0].reduce(0, +) }
        return (starts[0], starts[1], starts[2], starts[3], starts[4], starts[5], starts[6], starts[7])
    }

    /// The step's attention work items (they depend on the head layout and sliding window), built and uploaded by
    /// the first layer of each layout and reused by every other layer of it (models with sliding and global layers
    /// have two).
    private var attentionPlans: [AttentionShape: CUDAAttentionPlan] = [:]

    func attention(_ shape: AttentionShape, backend: CUDABackend) -> CUDAAttentionPlan {
        if let plan = attentionPlans[shape] { return plan }
        let plan = fixed.map { CUDAAttentionPlan(AttentionWork(fixedDecode: batch, shape: shape, splits: $0.attentionSplits,
                                                                                multiprocessors: backend.multiprocessorCount), shape: shape, backend: backend) }
            ?? CUDAAttentionPlan(batch, shape: shape, backend: backend)
        attentionPlans[shape] = plan
        return plan
    }
}

/// One adapter set's LoRA weights for one projection as the SGMV kernels read them (`LoraSlot` in common.cuh):
/// per slot, 88 bytes: a (8), rank (4), piece count (4), then 3 pieces of 24 bytes: b (8), rank, rank offset,
/// output offset, output width (4 each).
final class CUDALoRATable {
    let buffer: Tensor
    /// The projection version the buffer holds.
    private(set) var version: Int
    static let slotBytes = 88, pieceBytes = 24, maxPieces = 3

    init(_ projection: LoRAProjection, backend: CUDABackend) {
        version = projection.version
        buffer = backend.upload(bytes: Self.bytes(projection))
    }

    /// Rewrites the table in place for the projection's current slots (same slot count), so recorded steps that
    /// read it need no new recording.
    func update(_ projection: LoRAProjection, backend: CUDABackend) {
        let bytes = Self.bytes(projection)
        precondition(bytes.count <= buffer.elementCount * 4, "a LoRA table keeps its slot count")
        backend.copyToDevice(bytes, buffer.address)
        version = projection.version
    }

    private static func bytes(_ projection: LoRAProjection) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(1, projection.slots.count) * Self.slotBytes)
        func put<T>(_ value: T, at offset: Int) { withUnsafeBytes(of: value) { bytes.replaceSubrange(offset ..< offset + $0.count, with: $0) } }
        for (slot, weights) in projection.slots.enumerated() {
            guard let weights else { continue }
            precondition(weights.pieces.count <= Self.maxPieces, "at most \(Self.maxPieces) pieces per fused projection")
            let base = slot * Self.slotBytes
            put(weights.a.address, at: base)
            put(Int32(weights.rank), at: base + 8)
            put(Int32(weights.pieces.count), at: base + 12)
            for (index, piece) in weights.pieces.enumerated() {
                let offset = base + 16 + index * Self.pieceBytes
                put(piece.b.address, at: offset)
                put(Int32(piece.rank), at: offset + 8)
                put(Int32(piece.rankOffset), at: offset + 12)
                put(Int32(piece.outputOffset), at: offset + 16)
                put(Int32(piece.outputWidth), at: offset + 20)
            }
        }
        return bytes
    }
}

/// The NVIDIA GPU backend: weights and activations in float16 or bfloat16, float32 arithmetic; GEMMs through cuBLAS,
/// every other op a kernel of Kernels/*.cu compiled by NVRTC for this device.
public final class CUDABackend: Backend {
    public let dtype: DType
    public let deviceName: String
    /// The device's ordinal (cuDeviceGet's, NCCL's).
    public let device: Int
    public let computeCapability: (major: Int, minor: Int)
    public let multiprocessorCount: Int
    /// Kernels launch with programmatic dependent launch (sm_90+; PUNICA_PROGRAMMATIC_LAUNCH=0 turns it off, to
    /// measure it or rule it out).
    let programmaticLaunch: Bool
    let driver: CUDADriver
    let context: OpaquePointer?
    let stream: OpaquePointer?
    /// Adapter uploads: their copies run beside the step's kernels, and `stream` waits for them by event.
    private let loaderStream: OpaquePointer?
    /// LoRA shrinks run here, beside their projection's base GEMM (both only read its input): `shrinkIssued` forks
    /// it from `stream`, and the expand after waits for `shrinkDone`. PUNICA_SHRINK_STREAM=0 keeps them on `stream`.
    private let shrinkStream: OpaquePointer?
    private let shrinkIssued: OpaquePointer?, shrinkDone: OpaquePointer?
    private var shrinkRunning = false
    /// Uploads whose copy may still be running, each holding its host memory until its event completes.
    private var uploads: [(done: OpaquePointer?, source: HostBuffer)] = []
    let memory: DeviceMemory
    /// Adapters' host copies and sampled tokens' way back.
    let pinned: PinnedMemory
    let kernels: KernelLibrary
    let blas: CUBLAS
    private let blasWorkspace: Tensor

    public init(device: Int = 0, dtype: DType = .bfloat16) throws {
        guard dtype != .float32 else { throw CUDAError.unsupported("the CUDA backend stores float16 or bfloat16, not float32") }
        let driver = try CUDADriver()
        try driver.call("cuInit", driver.cuInit(0))
        var handle: Int32 = 0
        try driver.call("cuDeviceGet(\(device))", driver.cuDeviceGet(&handle, Int32(device)))
        var context: OpaquePointer?
        // The primary context is the one cuBLAS (through the runtime API) also uses.
        try driver.call("cuDevicePrimaryCtxRetain", driver.cuDevicePrimaryCtxRetain(&context, handle))
        try driver.call("cuCtxSetCurrent", driver.cuCtxSetCurrent(context))
        func attribute(_ code: Int32) throws(CUDAError) -> Int {
            var value: Int32 = 0
            try driver.call("cuDeviceGetAttribute(\(code))", driver.cuDeviceGetAttribute(&value, code, handle))
            return Int(value)
        }
        computeCapability = (try attribute(75), try attribute(76))
        multiprocessorCount = try attribute(16)
        programmaticLaunch = computeCapability.major >= 9 && ProcessInfo.processInfo.environment["PUNICA_PROGRAMMATIC_LAUNCH"] != "0"
        guard computeCapability.major >= 8 else {
            throw CUDAError.unsupported("compute capability \(computeCapability.major).\(computeCapability.minor) is below 8.0 (Ampere)")
        }
        var name = [CChar](repeating: 0, count: 256)
        try driver.call("cuDeviceGetName", driver.cuDeviceGetName(&name, 256, handle))
        deviceName = String(cString: name)
        self.device = device
        var stream: OpaquePointer?
        try driver.call("cuStreamCreate", driver.cuStreamCreate(&stream, 1))
        var loaderStream: OpaquePointer?
        try driver.call("cuStreamCreate", driver.cuStreamCreate(&loaderStream, 1))
        self.loaderStream = loaderStream
        var shrinkStream: OpaquePointer?, shrinkIssued: OpaquePointer?, shrinkDone: OpaquePointer?
        if ProcessInfo.processInfo.environment["PUNICA_SHRINK_STREAM"] != "0" {
            try driver.call("cuStreamCreate", driver.cuStreamCreate(&shrinkStream, 1))
            try driver.call("cuEventCreate", driver.cuEventCreate(&shrinkIssued, 2))  // CU_EVENT_DISABLE_TIMING
            try driver.call("cuEventCreate", driver.cuEventCreate(&shrinkDone, 2))
        }
        (self.shrinkStream, self.shrinkIssued, self.shrinkDone) = (shrinkStream, shrinkIssued, shrinkDone)
        self.driver = driver
        self.context = context
        self.stream = stream
        self.dtype = dtype
        memory = DeviceMemory(driver: driver)
        pinned = PinnedMemory(driver: driver, context: context, keptBytes: 1 << 30)
        let architecture = "sm_\(computeCapability.major)\(computeCapability.minor)\(computeCapability.major == 9 ? "a" : "")"
        kernels = try KernelLibrary(driver: driver, architecture: architecture, dtype: dtype)
        let workspaceBytes = 32 << 20
        blasWorkspace = Tensor(shape: [workspaceBytes], dtype: .float16, storage: CUDAStorage(bytes: workspaceBytes, memory: memory, pooled: false))
        blas = try CUBLAS(stream: stream, workspace: blasWorkspace.address, workspaceBytes: workspaceBytes)
    }

    public var name: String { "cuda (\(deviceName), \(dtype))" }

    /// The GPUs the driver sees.
    public static func deviceCount() throws -> Int {
        let driver = try CUDADriver()
        try driver.call("cuInit", driver.cuInit(0))
        var count: Int32 = 0
        try driver.call("cuDeviceGetCount", driver.cuDeviceGetCount(&count))
        return Int(count)
    }

    // MARK: Memory

    /// A CUDA context is current per thread: whichever thread calls in (a test, the engine loop) binds it first.
    /// The backend itself is not thread-safe; one owner drives it.
    private func makeCurrent() {
        must { () throws(CUDAError) in try driver.call("cuCtxSetCurrent", driver.cuCtxSetCurrent(context)) }
    }

    func allocate(_ shape: [Int], dtype: DType, pooled: Bool) -> Tensor {
        makeCurrent()
        return Tensor(shape: shape, dtype: dtype, storage: CUDAStorage(bytes: shape.reduce(1, *) * dtype.byteSize, memory: memory, pooled: pooled))
    }

    public func zeros(_ shape: [Int]) -> Tensor {
        zeroed(allocate(shape, dtype: dtype, pooled: true))
    }

    public var kvCacheDType: DType { dtype }

    public func kvCacheZeros(_ shape: [Int]) -> Tensor {
        zeroed(allocate(shape, dtype: dtype, pooled: false))
    }

    @discardableResult private func zeroed(_ tensor: Tensor, on target: OpaquePointer? = nil) -> Tensor {
        let bytes = tensor.elementCount * tensor.dtype.byteSize
        guard bytes > 0 else { return tensor }
        must { () throws(CUDAError) in try driver.call("cuMemsetD8Async", driver.cuMemsetD8Async(tensor.address, 0, bytes, target ?? stream)) }
        return tensor
    }

    /// Uploads raw 4-byte words (int32 metadata, packed structs) into a pooled buffer.
    func upload(bytes: [UInt8]) -> Tensor {
        precondition(bytes.count % 4 == 0, "uploads are whole 4-byte words")
        let tensor = allocate([bytes.count / 4], dtype: .float32, pooled: true)
        copyToDevice(bytes, tensor.address)
        return tensor
    }

    func upload(_ values: [Int32]) -> Tensor {
        upload(bytes: values.withUnsafeBytes { Array($0) })
    }

    /// Pageable host memory: the call returns once the data is staged, so `bytes` may go away right after. Never
    /// while recording: a replay would copy from host memory long gone.
    func copyToDevice(_ bytes: [UInt8], _ address: UInt64) {
        precondition(!memory.recording, "no host-to-device copies inside a recorded step")
        makeCurrent()
        must { () throws(CUDAError) in
            try driver.call("cuMemcpyHtoDAsync_v2", bytes.withUnsafeBytes { driver.cuMemcpyHtoDAsync(address, $0.baseAddress!, $0.count, stream) })
        }
    }

    public func float32Zeros(_ shape: [Int]) -> Tensor {
        zeroed(allocate(shape, dtype: .float32, pooled: true))
    }

    public func float32(_ values: [Float], shape: [Int]) -> Tensor {
        upload(bytes: values.withUnsafeBytes { Array($0) })
    }

    public func weight(from source: UnsafeRawPointer, dtype sourceType: DType, shape: [Int]) -> Tensor {
        let count = shape.reduce(1, *)
        var halves = [UInt16](repeating: 0, count: count)
        if sourceType == dtype {
            halves.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: source, count: count * 2)) }
        } else {
            var floats = [Float](repeating: 0, count: count)
            HalfConversion.toFloat32(source, dtype: sourceType, count: count, into: &floats)
            for i in 0..<count {
                halves[i] = dtype == .bfloat16 ? HalfConversion.bfloat16(floats[i]) : HalfConversion.float16(floats[i])
            }
        }
        let tensor = allocate(shape, dtype: dtype, pooled: false)
        copyToDevice(halves.withUnsafeBytes { Array($0) }, tensor.address)
        return tensor
    }

    public var weightDType: DType { dtype }

    public func hostBuffer(bytes: Int) throws -> HostBuffer { try pinned.take(bytes: bytes) }

    public func weights(slab: HostBuffer, views: [(offset: Int, shape: [Int])]) -> [Tensor] {
        precondition(!memory.recording, "no uploads inside a recorded step")
        makeCurrent()
        let storage = CUDAStorage(bytes: slab.byteCount, memory: memory, pooled: false)
        var done: OpaquePointer?
        must { () throws(CUDAError) in
            try driver.call("cuMemcpyHtoDAsync_v2(\(slab.byteCount) bytes)",
                            driver.cuMemcpyHtoDAsync(storage.address, slab.pointer, slab.byteCount, loaderStream))
            try driver.call("cuEventCreate", driver.cuEventCreate(&done, 2))  // CU_EVENT_DISABLE_TIMING
            try driver.call("cuEventRecord", driver.cuEventRecord(done, loaderStream))
            try driver.call("cuStreamWaitEvent", driver.cuStreamWaitEvent(stream, done, 0))
        }
        // Earlier uploads whose copy has finished (CUDA_SUCCESS) let go of their host memory.
        uploads = uploads.filter { upload in
            guard driver.cuEventQuery(upload.done) == 0 else { return true }
            _ = driver.cuEventDestroy(upload.done)
            return false
        }
        uploads.append((done, slab))
        return views.map { view in
            let bytes = view.shape.reduce(1, *) * dtype.byteSize
            return Tensor(shape: view.shape, dtype: dtype, storage: CUDAStorage(viewing: storage, byteOffset: view.offset * dtype.byteSize, bytes: bytes))
        }
    }

    public func randomWeight(shape: [Int], scale: Float, seed: UInt64) -> Tensor {
        let tensor = allocate(shape, dtype: dtype, pooled: false)
        let count = tensor.elementCount
        launch(FillUniform(out: tensor.address, count: UInt64(count), seed: seed, scale: scale), grid: ((count + 255) / 256, 1, 1), block: 256)
        return tensor
    }

    public func concatenateRows(_ parts: [Tensor]) -> Tensor {
        let result = allocate([parts.reduce(0) { $0 + $1.rows }] + parts[0].shape.dropFirst(), dtype: dtype, pooled: false)
        var offset: UInt64 = 0
        makeCurrent()
        for part in parts {
            let bytes = part.elementCount * dtype.byteSize
            must { () throws(CUDAError) in
                try driver.call("cuMemcpyDtoDAsync_v2", driver.cuMemcpyDtoDAsync(result.address + offset, part.address, bytes, stream))
            }
            offset += UInt64(bytes)
        }
        return result
    }

    public func toHost(_ tensor: Tensor) -> [Float] {
        makeCurrent()
        joinShrinkStream()
        let count = tensor.elementCount
        guard count > 0 else { return [] }
        let widened = tensor.dtype == .float32 ? tensor : allocate([count], dtype: .float32, pooled: true)
        if tensor.dtype != .float32 {
            launch(ToFloat32(x: tensor.address, out: widened.address, count: UInt64(count)), grid: ((count + 255) / 256, 1, 1), block: 256)
        }
        var values = [Float](repeating: 0, count: count)
        must { () throws(CUDAError) in
            try driver.call("cuMemcpyDtoHAsync_v2", values.withUnsafeMutableBytes { driver.cuMemcpyDtoHAsync($0.baseAddress!, widened.address, $0.count, stream) })
            try driver.call("cuStreamSynchronize", driver.cuStreamSynchronize(stream))
        }
        return values
    }

    public func plan(_ batch: StepBatch) -> StepPlan { CUDAPlan(batch, backend: self) }

    public func checkSupported(_ attention: AttentionShape) throws { try AttentionKernels.check(attention) }

    public func deviceMemory() -> (free: Int, total: Int)? {
        makeCurrent()
        var free = 0, total = 0
        must { () throws(CUDAError) in try driver.call("cuMemGetInfo_v2", driver.cuMemGetInfo(&free, &total)) }
        return (free, total)
    }

    /// Waits for every queued kernel.
    public func synchronize() {
        makeCurrent()
        joinShrinkStream()
        must { () throws(CUDAError) in try driver.call("cuStreamSynchronize", driver.cuStreamSynchronize(stream)) }
    }

    // MARK: Measuring

    /// Microseconds of each of `iterations` runs of `body`, timed with CUDA events after `warmup` untimed runs.
    public func eventTimes(iterations: Int, warmup: Int, _ body: () -> Void) throws -> [Double] {
        makeCurrent()
        for _ in 0..<warmup { body() }
        var events: [OpaquePointer?] = Array(repeating: nil, count: iterations + 1)
        for index in events.indices { try driver.call("cuEventCreate", driver.cuEventCreate(&events[index], 0)) }
        try driver.call("cuEventRecord", driver.cuEventRecord(events[0], stream))
        for index in 1...iterations {
            body()
            try driver.call("cuEventRecord", driver.cuEventRecord(events[index], stream))
        }
        try driver.call("cuEventSynchronize", driver.cuEventSynchronize(events[iterations]))
        return try (1...iterations).map { index in
            var milliseconds: Float = 0
            try driver.call("cuEventElapsedTime", driver.cuEventElapsedTime(&milliseconds, events[index - 1], events[index]))
            return Double(milliseconds) * 1000
        }
    }

    /// Device-to-device copy bandwidth in bytes per second, read and write both counted: the roofline's bandwidth.
    public func measureCopyBandwidth(bytes: Int = 1 << 30) throws -> Double {
        let source = allocate([bytes / 4], dtype: .float32, pooled: false), target = allocate([bytes / 4], dtype: .float32, pooled: false)
        let times = try eventTimes(iterations: 20, warmup: 3) {
            must { () throws(CUDAError) in
                try driver.call("cuMemcpyDtoDAsync_v2", driver.cuMemcpyDtoDAsync(target.address, source.address, bytes, stream))
            }
        }
        return 2 * Double(bytes) / (times.sorted()[times.count / 2] * 1e-6)
    }

    // MARK: Launching

    /// Launches a kernel on `target` (default: the step stream) with `sharedBytes` of dynamic shared memory. An empty
    /// grid (a step with no logit rows, say) launches nothing: CUDA refuses zero-sized grids.
    func launch<P: KernelParameters>(_ parameters: P, grid: (Int, Int, Int), block: Int, sharedBytes: Int = 0, on target: OpaquePointer? = nil) {
        guard grid.0 > 0, grid.1 > 0, grid.2 > 0 else { return }
        makeCurrent()
        let kernel = kernels[P.self]
        if sharedBytes > 48 << 10 {  // above 48 KiB a kernel must opt in (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
            must { () throws(CUDAError) in
                try driver.call("cuFuncSetAttribute(\(P.kernel), \(sharedBytes) shared bytes)", driver.cuFuncSetAttribute(kernel.function, 8, Int32(sharedBytes)))
            }
        }
        var parameters = parameters
        // Every kernel may start while the previous one finishes (programmatic dependent launch, sm_90+).
        var attribute = LaunchAttribute.programmaticStreamSerialization
        let result = withUnsafeMutableBytes(of: &parameters) { raw in
            var pointers = kernel.parameterOffsets.map { UnsafeMutableRawPointer?(raw.baseAddress! + $0) }
            return withUnsafeMutablePointer(to: &attribute) { attribute in
                var config = LaunchConfig(gridX: UInt32(grid.0), gridY: UInt32(grid.1), gridZ: UInt32(grid.2), blockX: UInt32(block), blockY: 1,
                                          blockZ: 1, sharedBytes: UInt32(sharedBytes), stream: target ?? stream, attributes: attribute,
                                          attributeCount: programmaticLaunch ? 1 : 0)
                return driver.cuLaunchKernelEx(&config, kernel.function, &pointers, nil)
            }
        }
        must { () throws(CUDAError) in try driver.call("cuLaunchKernelEx(\(P.kernel))", result) }
    }

    // MARK: Ops

    public func embedding(table: Tensor, firstToken: Int, plan: StepPlan, out: Tensor) {
        let cuda = plan.cuda
        launch(Embedding(tokens: cuda.address(cuda.tokens), table: table.address, out: out.address, width: Int32(out.rowWidth),
                         firstToken: Int32(firstToken), tableRows: Int32(table.rows)),
               grid: (out.rows, 1, 1), block: 256)
    }

    /// out[row, firstColumn ..< +width] = the [rows, width] matrix at `source`: a rank's part of gathered logits.
    func copyColumns(from source: UInt64, rows: Int, width: Int, into out: Tensor, firstColumn: Int) {
        launch(CopyColumns(from: source, to: out.address, width: Int32(width), toWidth: Int32(out.rowWidth), firstColumn: Int32(firstColumn)),
               grid: (rows, 1, 1), block: 256)
    }

    public func rmsNorm(x: Tensor, weight: Tensor, epsilon: Float, out: Tensor) {
        launch(RMSNorm(x: x.address, weight: weight.address, out: out.address, width: Int32(x.rowWidth), eps: epsilon),
               grid: (x.rows, 1, 1), block: 512)
    }

    public func addRMSNorm(residual: Tensor, x: Tensor, weight: Tensor, epsilon: Float, out: Tensor) {
        launch(AddRMSNorm(residual: residual.address, x: x.address, weight: weight.address, out: out.address, width: Int32(x.rowWidth),
                          eps: epsilon), grid: (x.rows, 1, 1), block: 512)
    }

    public func matmul(x: Tensor, weight: Tensor, out: Tensor) {
        let dataType: Int32 = dtype == .bfloat16 ? 14 : 2  // CUDA_R_16BF, CUDA_R_16F
        guard x.rows > 0 else { return }
        makeCurrent()
        must { () throws(CUDAError) in
            try blas.matmul(x: x.address, w: weight.address, out: out.address, m: x.rows, n: weight.rows, k: x.rowWidth, dataType: dataType)
        }
    }

    public func addBias(x: Tensor, bias: Tensor) {
        launch(AddBias(x: x.address, bias: bias.address, width: Int32(x.rowWidth)), grid: ((x.rowWidth + 255) / 256, x.rows, 1), block: 256)
    }

    public func headRMSNorm(qkv: Tensor, shape: AttentionShape, queryWeight: Tensor, keyWeight: Tensor, epsilon: Float) {
        launch(HeadRMSNorm(qkv: qkv.address, queryWeight: queryWeight.address, keyWeight: keyWeight.address, qkvWidth: Int32(qkv.rowWidth),
                           headDim: Int32(shape.headDim), queryHeads: Int32(shape.queryHeads), eps: epsilon),
               grid: (qkv.rows, shape.queryHeads + shape.kvHeads, 1), block: 32)
    }

    public func ropeAppendKV(qkv: Tensor, shape: AttentionShape, inverseFrequencies: Tensor, scale: Float, cache: KVCacheLayer,
                             layout: PageLayout, plan: StepPlan) {
        let cuda = plan.cuda
        let headsPerBlock = RopeAppendKV.headsPerBlock(headDim: shape.headDim)
        launch(RopeAppendKV(qkv: qkv.address, keys: cache.keys.address, values: cache.values.address, positions: cuda.address(cuda.positions),
                            rowSequence: cuda.address(cuda.rowSequence), blockTables: cuda.address(cuda.blockTables),
                            inverseFrequencies: inverseFrequencies.address, maxPages: Int32(cuda.maxPages), pageSize: Int32(layout.pageSize),
                            qkvWidth: Int32(qkv.rowWidth), queryHeads: Int32(shape.queryHeads), kvHeads: Int32(shape.kvHeads),
                            headDim: Int32(shape.headDim), headsPerBlock: Int32(headsPerBlock), scale: scale),
               grid: (qkv.rows, (shape.queryHeads + shape.kvHeads + headsPerBlock - 1) / headsPerBlock, 1), block: RopeAppendKV.threads)
    }

    /// Attention over the step's work items (attention.cu): the 64-row and 16-row tensor-core tiles, the CUDA-core
    /// decode tiles, then the merge of split tiles. Per step the plan uploads the item lists once; per layer this is
    /// four launches (empty lists launch nothing).
    public func attention(qkv: Tensor, shape: AttentionShape, cache: KVCacheLayer, layout: PageLayout, plan: StepPlan, out: Tensor) {
        must { () throws(CUDAError) in try AttentionKernels.check(shape) }  // models are checked at load (checkSupported)
        let cuda = plan.cuda
        let items = cuda.attention(shape, backend: self)
        // A block per (item, KV head).
        func tiles<Kernel: AttentionKernel>(_ kernel: Kernel.Type, list: UInt64, count: Int) {
            launch(AttentionTiles<Kernel>(
                       qkv: qkv.address, keys: cache.keys.address, values: cache.values.address, items: list,
                       blockTables: cuda.address(cuda.blockTables), out: out.address, partialAcc: items.partialAcc,
                       partialMaxSum: items.partialMaxSum, maxPages: Int32(cuda.maxPages), qkvWidth: Int32(qkv.rowWidth),
                       queryHeads: Int32(shape.queryHeads), kvHeads: Int32(shape.kvHeads), headDim: Int32(shape.headDim),
                       pageSize: Int32(layout.pageSize), slidingWindow: Int32(shape.slidingWindow ?? 0),
                       scaleLog2: Float(1.4426950408889634 * Double(shape.scale)),
                       softcapLog2: Float(1.4426950408889634 * Double(shape.softcap ?? 0))),
                   grid: (count * shape.kvHeads, 1, 1), block: AttentionKernels.threads, sharedBytes: Kernel.sharedBytes(headDim: shape.headDim))
        }
        let kernels: (rows64: any AttentionKernel.Type, rows16: any AttentionKernel.Type) = shape.headDim <= AttentionRows64.headDims.upperBound
            ? (AttentionRows64.self, AttentionRows16.self) : (AttentionRows64D256.self, AttentionRows16D256.self)
        tiles(kernels.rows64, list: items.rows64Items, count: items.work.rows64.count)
        tiles(kernels.rows16, list: items.rows16Items, count: items.work.rows16.count)
        tiles(AttentionDecode.self, list: items.decodeItems, count: items.work.decode.count)
        launch(AttentionMerge(merges: items.mergeItems, partialAcc: items.partialAcc, partialMaxSum: items.partialMaxSum, out: out.address,
                              queryHeads: Int32(shape.queryHeads), kvHeads: Int32(shape.kvHeads), headDim: Int32(shape.headDim)),
               grid: (items.work.merges.count * shape.kvHeads, 1, 1), block: AttentionKernels.threads)
    }

    public func siluMul(gateUp: Tensor, out: Tensor) {
        launch(SiluMul(gateUp: gateUp.address, out: out.address, halfWidth: Int32(out.rowWidth)),
               grid: ((out.rowWidth + 256 * 8 - 1) / (256 * 8), out.rows, 1), block: 256)
    }

    public func geluTanhMul(gateUp: Tensor, out: Tensor) {
        launch(GeluTanhMul(gateUp: gateUp.address, out: out.address, halfWidth: Int32(out.rowWidth)),
               grid: ((out.rowWidth + 256 * 8 - 1) / (256 * 8), out.rows, 1), block: 256)
    }

    public func scale(_ x: Tensor, by factor: Float) {
        launch(Scale(x: x.address, count: UInt64(x.elementCount), factor: factor), grid: ((x.elementCount + 255) / 256, 1, 1), block: 256)
    }

    public func softcap(_ x: Tensor, cap: Float) {
        launch(Softcap(x: x.address, count: UInt64(x.elementCount), cap: cap), grid: ((x.elementCount + 255) / 256, 1, 1), block: 256)
    }

    func loraTable(_ projection: LoRAProjection) -> CUDALoRATable {
        if let table = projection.backendTable as? CUDALoRATable {
            if table.version != projection.version { table.update(projection, backend: self) }
            return table
        }
        let table = CUDALoRATable(projection, backend: self)
        projection.backendTable = table
        return table
    }

    public func loraShrink(x: Tensor, projection: LoRAProjection, plan: StepPlan, v: Tensor) {
        let cuda = plan.cuda
        // A recorded step's tables change under it: its grid covers every rank `v` holds (blocks past a slot's rank
        // return at once).
        let ranks = cuda.fixed == nil ? projection.maxRank : v.rowWidth
        let grid = cuda.loraGrid(rank: ranks)
        guard !grid.shrink.isEmpty || !grid.tensorCore.isEmpty else { return }
        let slots = loraTable(projection).buffer.address
        onShrinkStream { target in
            if !grid.tensorCore.isEmpty {
                // Split the input width until there are two blocks per multiprocessor (each split at least 128 wide); the
                // splits add into v, so it starts at zero.
                let (count, (start, end, slot)) = (grid.tensorCore.count, cuda.tileTable(grid.tensorCore))
                let rankChunks = (ranks + SGMVShrinkMMA.rankChunk - 1) / SGMVShrinkMMA.rankChunk
                let splits = max(1, min((x.rowWidth + 127) / 128, (2 * multiprocessorCount + count * rankChunks - 1) / (count * rankChunks)))
                let step = SGMVShrinkMMA.kStep
                let kSplit = ((x.rowWidth + splits - 1) / splits + step - 1) / step * step
                zeroed(v, on: target)
                launch(SGMVShrinkMMA(x: x.address, v: v.address, slots: slots, tileStart: start, tileEnd: end, tileSlot: slot,
                                     inWidth: Int32(x.rowWidth), vWidth: Int32(v.rowWidth), kSplit: Int32(kSplit)),
                       grid: (count, rankChunks, (x.rowWidth + kSplit - 1) / kSplit), block: 128, on: target)
            }
            // A block per tile and SHRINK_RANKS rank rows.
            func shrink<Rows: SGMVTileRows>(_: Rows.Type) {
                let (start, end, slot) = cuda.tileTable(grid.shrink)
                launch(SGMVShrink<Rows>(x: x.address, v: v.address, slots: slots, tileStart: start, tileEnd: end, tileSlot: slot,
                                        inWidth: Int32(x.rowWidth), vWidth: Int32(v.rowWidth)),
                       grid: (grid.shrink.count, (ranks + SGMVShrink<Rows>.ranksPerBlock - 1) / SGMVShrink<Rows>.ranksPerBlock, 1),
                       block: SGMVShrink<Rows>.threads, on: target)
            }
            if !grid.shrink.isEmpty { if grid.shrinkRows == 1 { shrink(SGMVOneRow.self) } else { shrink(SGMVFourRows.self) } }
        }
    }

    /// Runs `body`'s launches on the shrink stream, forked from the step stream here; the next loraExpand (or host
    /// read, or the end of a recording) joins it.
    private func onShrinkStream(_ body: (OpaquePointer?) -> Void) {
        guard let shrinkStream else { return body(stream) }
        must { () throws(CUDAError) in
            try driver.call("cuEventRecord", driver.cuEventRecord(shrinkIssued, stream))
            try driver.call("cuStreamWaitEvent", driver.cuStreamWaitEvent(shrinkStream, shrinkIssued, 0))
        }
        body(shrinkStream)
        must { () throws(CUDAError) in try driver.call("cuEventRecord", driver.cuEventRecord(shrinkDone, shrinkStream)) }
        shrinkRunning = true
    }

    /// The step stream waits for the last shrink.
    private func joinShrinkStream() {
        guard shrinkRunning else { return }
        must { () throws(CUDAError) in try driver.call("cuStreamWaitEvent", driver.cuStreamWaitEvent(stream, shrinkDone, 0)) }
        shrinkRunning = false
    }

    public func loraExpand(v: Tensor, projection: LoRAProjection, plan: StepPlan, y: Tensor) {
        let cuda = plan.cuda
        let grid = cuda.loraGrid(rank: cuda.fixed == nil ? projection.maxRank : v.rowWidth)  // as loraShrink's
        guard !grid.expand.isEmpty || !grid.tensorCore.isEmpty else { return }
        let slots = loraTable(projection).buffer.address
        joinShrinkStream()
        if !grid.tensorCore.isEmpty {
            let (start, end, slot) = cuda.tileTable(grid.tensorCore)
            launch(SGMVExpandMMA(v: v.address, y: y.address, slots: slots, tileStart: start, tileEnd: end, tileSlot: slot,
                                 vWidth: Int32(v.rowWidth), yWidth: Int32(y.rowWidth)),
                   grid: (grid.tensorCore.count, (y.rowWidth + SGMVExpandMMA.columns - 1) / SGMVExpandMMA.columns, SGMVShrinkMMA.tileRows / 16),
                   block: 128)
        }
        guard !grid.expand.isEmpty else { return }
        // A block per tile (of at most `Rows.rows` rows) and 128 output columns.
        func expand<Rows: SGMVTileRows>(_: Rows.Type) {
            let (start, end, slot) = cuda.tileTable(grid.expand)
            launch(SGMVExpand<Rows>(v: v.address, y: y.address, slots: slots, tileStart: start, tileEnd: end, tileSlot: slot,
                                    vWidth: Int32(v.rowWidth), yWidth: Int32(y.rowWidth)),
                   grid: (grid.expand.count, (y.rowWidth + 127) / 128, 1), block: 128)
        }
        if grid.expandRows == 1 { expand(SGMVOneRow.self) } else { expand(SGMVFourRows.self) }
    }

    public func sample(_ logits: Tensor, _ choices: [TokenChoice]) -> SampledTokens {
        precondition(choices.count == logits.rows, "one choice per logits row")
        let (rows, vocab) = (logits.rows, logits.rowWidth)
        guard rows > 0 else { return SampledTokens([]) }
        // The kernels read float32 and the penalties write: a widened copy, so `logits` stays as it was.
        let widened = allocate([rows, vocab], dtype: .float32, pooled: true)
        if logits.dtype == .float32 {
            must { () throws(CUDAError) in
                try driver.call("cuMemcpyDtoDAsync_v2", driver.cuMemcpyDtoDAsync(widened.address, logits.address, rows * vocab * 4, stream))
            }
        } else {
            launch(ToFloat32(x: logits.address, out: widened.address, count: UInt64(rows * vocab)), grid: ((rows * vocab + 255) / 256, 1, 1),
                   block: 256)
        }
        // One upload: SampleParams per row (5 words), adjustment offsets (rows + 1), then LogitAdjustments (4 words).
        var words: [UInt32] = choices.flatMap {
            [$0.temperature.bitPattern, UInt32(bitPattern: Int32($0.topK)), $0.topP.bitPattern, $0.uniform.bitPattern, $0.logMinP.bitPattern]
        }
        let adjustments = choices.map(\.adjustments)
        var offset: Int32 = 0
        words += [0] + adjustments.map { offset += Int32($0.count); return UInt32(bitPattern: offset) }
        words += adjustments.joined().flatMap {
            [UInt32(bitPattern: $0.token), $0.bias.bitPattern, $0.penalty.bitPattern, $0.subtracted.bitPattern]
        }
        let metadata = upload(bytes: words.withUnsafeBytes { Array($0) })
        let address = { (word: Int) in metadata.address + UInt64(4 * word) }
        if offset > 0 {
            launch(AdjustLogits(logits: widened.address, offsets: address(5 * rows), adjustments: address(6 * rows + 1), vocab: Int32(vocab)),
                   grid: (rows, 1, 1), block: 256)
        }
        let tokens = allocate([rows], dtype: .float32, pooled: true)  // int32 results: 4 bytes each
        launch(SampleRows(logits: widened.address, params: metadata.address, out: tokens.address, vocab: Int32(vocab)),
               grid: (rows, 1, 1), block: 1024)
        return readBack(tokens, rows: rows)
    }

    /// `rows` int32 token ids copied behind the stream's work into pinned memory; reading them waits for the copy's
    /// event, so the host can prepare the next step while this one runs.
    private func readBack(_ tokens: Tensor, rows: Int) -> SampledTokens {
        var host: HostBuffer?
        var done: OpaquePointer?
        must { () throws(CUDAError) in
            host = try pinned.take(bytes: 4 * rows)
            try driver.call("cuMemcpyDtoHAsync_v2", driver.cuMemcpyDtoHAsync(host!.pointer, tokens.address, 4 * rows, stream))
            try driver.call("cuEventCreate", driver.cuEventCreate(&done, 2))  // CU_EVENT_DISABLE_TIMING
            try driver.call("cuEventRecord", driver.cuEventRecord(done, stream))
        }
        let copy = PendingCopy(event: done, into: host!, driver: driver)
        return SampledTokens(device: tokens, ready: { copy.isDone }, wait: {
            copy.wait()
            return UnsafeBufferPointer(start: copy.host.pointer.assumingMemoryBound(to: Int32.self), count: rows).map(Int.init)
        })
    }

    public func feed(_ fed: FedTokens, plan: StepPlan) {
        guard !fed.rows.isEmpty else { return }
        guard let sampled = fed.source.device else { preconditionFailure("fed tokens come from this backend's sample") }
        let cuda = plan.cuda
        let pairs = upload(fed.rows.flatMap { [Int32($0.row), Int32($0.index)] })
        launch(FeedTokens(sampled: sampled.address, pairs: pairs.address, count: Int32(fed.rows.count), tokens: cuda.address(cuda.tokens)),
               grid: ((fed.rows.count + 127) / 128, 1, 1), block: 128)
    }

    public func gatherLogitRows(x: Tensor, plan: StepPlan, out: Tensor) {
        let cuda = plan.cuda
        guard out.rows > 0 else { return }
        launch(GatherRows(x: x.address, rows: cuda.address(cuda.logitRows), out: out.address, width: Int32(x.rowWidth)),
               grid: (out.rows, 1, 1), block: 256)
    }
}

extension StepPlan {
    var cuda: CUDAPlan {
        guard let plan = self as? CUDAPlan else { preconditionFailure("step plan was not made by the CUDA backend") }
        return plan
    }
}

// MARK: Recorded steps (CUDA graphs)

/// A step captured from the backend's stream into a CUDA graph, instantiated once and launched per replay. It keeps
/// alive the tensors its launches use (its output; the rest are in the recordings' pool).
final class CUDARecordedStep: RecordedStep {
    let output: Tensor
    private let graph: OpaquePointer?
    private let backend: CUDABackend

    init(output: Tensor, graph: OpaquePointer?, backend: CUDABackend) {
        self.output = output
        self.graph = graph
        self.backend = backend
    }

    func replay() { backend.launchGraph(graph) }

    deinit { _ = backend.driver.cuGraphExecDestroy(graph) }
}

extension CUDABackend: StepRecorder {
    public func fixedPlan(rows: Int, maxPages: Int, withLoRA: Bool, variant: Int) -> StepPlan {
        CUDAPlan(fixedRows: rows, maxPages: maxPages, withLoRA: withLoRA, attentionSplits: variant, backend: self)
    }

    /// A recorded decode step's attention key splits.
    public func recordingVariant(rows: Int, maxContext: Int, attention: AttentionShape) -> Int {
        AttentionWork.fixedDecodeSplits(rows: rows, shape: attention, maxContext: maxContext, multiprocessors: multiprocessorCount)
    }

    public func refill(_ plan: StepPlan, with batch: StepBatch) { plan.cuda.refill(batch, backend: self) }

    public func record(_ body: () -> Tensor) throws -> RecordedStep {
        makeCurrent()
        // Relaxed: the body may still cuMemAlloc (a pool growing), which the stricter modes refuse while capturing.
        try driver.call("cuStreamBeginCapture_v2", driver.cuStreamBeginCapture(stream, 2))
        memory.recording = true
        let output = body()
        joinShrinkStream()
        memory.recording = false
        var graph: OpaquePointer?
        try driver.call("cuStreamEndCapture", driver.cuStreamEndCapture(stream, &graph))
        defer { _ = driver.cuGraphDestroy(graph) }
        var executable: OpaquePointer?
        try driver.call("cuGraphInstantiateWithFlags", driver.cuGraphInstantiateWithFlags(&executable, graph, 0))
        return CUDARecordedStep(output: output, graph: executable, backend: self)
    }

    public func prepare(_ projections: [LoRAProjection]) {
        for projection in projections { _ = loraTable(projection) }
    }

    func launchGraph(_ graph: OpaquePointer?) {
        makeCurrent()
        must { () throws(CUDAError) in try driver.call("cuGraphLaunch", driver.cuGraphLaunch(graph, stream)) }
    }
}
