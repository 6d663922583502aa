/// Hands out KV-cache pages. Pure bookkeeping: no tensors, no I/O.
///
/// Invariants (checked by `verifyInvariants` in debug builds): page 0 is never handed out; a page is either free
/// or owned, never both and never twice.
public struct BlockAllocator: Sendable {
    public let pageCount: Int
    private var free: [Int32]
    private var owned: Set<Int32> = []

    public init(pageCount: Int) {
        self.pageCount = pageCount
        // Popped from the end: low pages go first, which keeps early sequences' pages together.
        free = (1..<Int32(pageCount)).reversed()
    }

    public var freeCount: Int { free.count }
    public var usedCount: Int { owned.count }

    /// `count` pages, or nil (and nothing taken) when fewer are free.
    public mutating func allocate(_ count: Int) -> [Int32]? {
        guard count <= free.count else { return nil }
        let pages = Array(free.suffix(count).reversed())
        free.removeLast(count)
        owned.formUnion(pages)
        verifyInvariants()
        return pages
    }

    public mutating func release(_ pages: [Int32]) {
        for page in pages {
            precondition(owned.remove(page) != nil, "page \(page) released but not owned")
            free.append(page)
        }
        verifyInvariants()
    }

    public func verifyInvariants() {
        #if DEBUG
        precondition(!owned.contains(0) && !free.contains(0), "page 0 must never be handed out")
        precondition(owned.count + free.count == pageCount - 1, "pages lost or duplicated")
        precondition(Set(free).count == free.count && owned.isDisjoint(with: free), "a page is free twice or both free and owned")
        #endif
    }
}
