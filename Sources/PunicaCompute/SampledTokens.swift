/// The token ids a backend's `sample` picked, one per logits row, on their way to the host. A backend that samples
/// in place has them at once; a GPU copies them back behind the step, and reading `ids` waits for that copy, so the
/// caller can prepare the next step meanwhile.
public final class SampledTokens {
    private var values: [Int]?
    private let ready: () -> Bool
    private let wait: () -> [Int]

    /// Ids already on the host.
    public init(_ ids: [Int]) {
        values = ids
        ready = { true }
        wait = { ids }
    }

    /// Ids that `wait` returns once the device has produced them; `ready` says, without blocking, whether it has.
    public init(ready: @escaping () -> Bool, wait: @escaping () -> [Int]) {
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
