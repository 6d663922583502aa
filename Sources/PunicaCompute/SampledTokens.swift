/// The token ids a backend's `sample` picked, one per logits row, on their way to the host. A backend that samples
/// in place has them at once; a GPU copies them back behind the step, and reading `ids` waits for that copy, so the
/// caller can prepare the next step meanwhile.
public final class SampledTokens {
    /// The ids where the device wrote them (int32), for a step that takes them as input before they are read
    /// (`Backend.feed`); nil where they are computed on the host.
    public let device: Tensor?
    private var values: [Int]?
    private let ready: () -> Bool
    private let wait: () -> [Int]

    /// Ids already on the host.
    public init(_ ids: [Int]) {
        values = ids
        device = nil
        ready = { true }
        wait = { ids }
    }

    /// Ids that `wait` returns once the device has produced them in `device`; `ready` says, without blocking,
    /// whether it has.
    public init(device: Tensor?, ready: @escaping () -> Bool, wait: @escaping () -> [Int]) {
        self.device = device
        self.ready = ready
        self.wait = wait
    }

    /// Whether reading `ids` would return without waiting.
    public var isReady: Bool { values != nil || ready() }

    /// The ids, waiting for them the first time.
    public var ids: [Int] {
        if let values { return values }
        let fetched = wait()
        values = fetched
        return fetched
    }
}

/// Input tokens of a step that the step before it is sampling: row `rows[i].row` takes id `rows[i].index` of `source`.
/// The device fills them in, so the step can be queued before the ids reach the host.
public struct FedTokens {
    public let source: SampledTokens
    public let rows: [(row: Int, index: Int)]

    public init(source: SampledTokens, rows: [(row: Int, index: Int)]) {
        self.source = source
        self.rows = rows
    }
}
