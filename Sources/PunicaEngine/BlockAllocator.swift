/// Hands out KV-cache pages. Pure bookkeeping: no tensors, no I/O.
///
/// A page may be shared: requests with the same prompt (a request's `n` choices) hold its full pages once, each
/// holder counted; a page is free again when its last holder releases it.
///
/// Invariants (checked by `verifyInvariants` in debug builds): page 0 is never handed out; a page is either free
/// or held, never both, and free at most once.
public struct BlockAllocator: Sendable {
    public let pageCount: Int
    private var free: [Int32]
    /// Holders of each page in use.
    private var holders: [Int32: Int] = [:]

    public init(pageCount: Int) {
        self.pageCount = pageCount
        // Popped from the end: low pages go first, which keeps early sequences' pages together.
        free = (1..<Int32(pageCount)).reversed()
    }

    public var freeCount: Int { free.count }
    public var usedCount: Int { holders.count }

    /// Holders of `page` (0 when free).
    public func holderCount(_ page: Int32) -> Int { holders[page] ?? 0 }

    /// `count` pages, or nil (and nothing taken) when fewer are free.
    public mutating func allocate(_ count: Int) -> [Int32]? {
        guard count <= free.count else { return nil }
        let pages = Array(free.suffix(count).reversed())
        free.removeLast(count)
        for page in pages { holders[page] = 1 }
        verifyInvariants()
        return pages
    }

    /// One more holder for pages already in use.
    public mutating func share(_ pages: [Int32]) {
        for page in pages {
            precondition(holders[page] != nil, "page \(page) shared but not in use")
            holders[page]! += 1
        }
    }

    public mutating func release(_ pages: [Int32]) {
        for page in pages {
            guard let count = holders[page] else { preconditionFailure("page \(page) released but not in use") }
            if count > 1 {
                holders[page] = count - 1
            } else {
                holders[page] = nil
                free.append(page)
            }
        }
        verifyInvariants()
    }

    public func verifyInvariants() {
        #if DEBUG
        precondition(holders[0] == nil && !free.contains(0), "page 0 must never be handed out")
        precondition(holders.count + free.count == pageCount - 1, "pages lost or duplicated")
        precondition(Set(free).count == free.count && free.allSatisfy { holders[$0] == nil }, "a page is free twice or both free and held")
        #endif
    }
}
