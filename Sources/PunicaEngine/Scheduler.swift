/// Decides, step by step, how many tokens each request computes. Pure: no tensors, no clock, no I/O.
///
/// There is no prefill phase and no decode phase: every step brings each running request's computed tokens toward
/// its known tokens (prompt plus generated), a prompt in chunks under the step's token budget, a decoding request one
/// token at a time. Waiting requests are admitted first come, first served, while there is room in the batch, in the
/// budget and in the KV cache, and once their adapter is resident. When pages run out, the newest running request is
/// preempted: its pages are freed and it waits at the front of the queue to be recomputed, so nothing fails.
///
/// Requests of one prompt group (a prompt's `n` choices) share its prefill: the first admitted computes the prompt;
/// one admitted while a member runs takes, once steps before have written them, the member's full pages below the
/// prompt's last token (the allocator counting each holder) and computes only the rest. The last prompt token is each
/// request's own: its logits pick the first token, and its page is written on by decoding. A shared page is thus
/// full in every holder and never written again; it is free once its last holder is done.
public struct Scheduler: Sendable {
    public struct Configuration: Sendable {
        public var maxRunning: Int
        public var maxTokensPerStep: Int

        public init(maxRunning: Int, maxTokensPerStep: Int) {
            self.maxRunning = maxRunning
            self.maxTokensPerStep = maxTokensPerStep
        }
    }

    /// One request as the scheduler sees it.
    public struct Entry: Sendable, Equatable {
        public let id: Int
        /// Adapter the request uses, nil for the base model; the caller's key, opaque here.
        public let adapter: String?
        /// The prompt group, nil when it shares nothing; the caller's key, opaque here.
        public let group: String?
        /// Tokens of the prompt in the full pages below its last token: what a member of its group shares.
        public let prefixTokens: Int
        /// Tokens known so far: the prompt plus every generated token.
        public var knownTokens: Int
        /// Tokens already in the KV cache.
        public var computedTokens = 0
        public var pages: [Int32] = []
        /// Times preempted, for stats and tests.
        public var preemptions = 0
    }

    /// A request's share of one step: `count` new tokens at positions computedTokens ..< computedTokens + count.
    public struct Work: Sendable, Equatable {
        public let id: Int
        public let count: Int
        /// Tokens in its KV cache once the step has run.
        public let contextLength: Int
        public let pages: [Int32]
        /// Whether the step computes its last known token, so its next token gets sampled.
        public let samples: Bool
    }

    public let configuration: Configuration
    /// Token slots per KV page.
    public let pageSize: Int
    public private(set) var allocator: BlockAllocator
    public private(set) var waiting: [Entry] = []
    public private(set) var running: [Entry] = []
    /// Prompt tokens taken from a group member's pages instead of computed, all requests so far.
    public private(set) var sharedPromptTokens = 0

    public init(configuration: Configuration, pageSize: Int, pageCount: Int) {
        self.configuration = configuration
        self.pageSize = pageSize
        allocator = BlockAllocator(pageCount: pageCount)
    }

    private func pagesNeeded(forTokens tokens: Int) -> Int { (tokens + pageSize - 1) / pageSize }

    public var isIdle: Bool { waiting.isEmpty && running.isEmpty }

    /// Queues a request; `knownTokens` is its prompt length. Requests of one `group` must have the same prompt.
    public mutating func add(id: Int, adapter: String?, knownTokens: Int, group: String? = nil) {
        precondition(knownTokens > 0, "a request needs at least one token")
        let prefix = (knownTokens - 1) / pageSize * pageSize
        waiting.append(Entry(id: id, adapter: adapter, group: prefix > 0 ? group : nil, prefixTokens: prefix, knownTokens: knownTokens))
    }

    /// A sampled token joined request `id`'s known tokens.
    public mutating func appendToken(id: Int) {
        guard let index = running.firstIndex(where: { $0.id == id }) else { return }
        running[index].knownTokens += 1
    }

    /// Removes a request wherever it is (finished, cancelled or failed) and frees its pages.
    public mutating func remove(id: Int) {
        if let index = running.firstIndex(where: { $0.id == id }) {
            allocator.release(running.remove(at: index).pages)
        } else if let index = waiting.firstIndex(where: { $0.id == id }) {
            allocator.release(waiting.remove(at: index).pages)
        }
        verifyInvariants()
    }

    /// Plans the next step. `readyAdapters` are those a step can use (resident in a slot); requests whose adapter
    /// is not among them stay waiting, others may pass them.
    public mutating func schedule(readyAdapters: Set<String>) -> [Work] {
        var budget = configuration.maxTokensPerStep
        var work: [Work] = []
        // Running requests first, oldest first; make room by preempting the newest when the cache is full.
        var index = 0
        while index < running.count, budget > 0 {
            let count = min(running[index].knownTokens - running[index].computedTokens, budget)
            guard count > 0 else {
                index += 1
                continue
            }
            if !reservePages(forRunning: index, count: count) {
                // The newest request gave up its pages; if that was this one, it is gone from `running`.
                continue
            }
            budget -= count
            work.append(take(&running[index], count: count))
            index += 1
        }
        // Then admit waiting requests, first come first served.
        var position = 0
        while position < waiting.count, running.count < configuration.maxRunning, budget > 0 {
            let entry = waiting[position]
            if let adapter = entry.adapter, !readyAdapters.contains(adapter) {
                position += 1
                continue
            }
            guard let shared = sharedPages(for: entry, scheduled: work) else {
                position += 1  // a member of its group is still computing them
                continue
            }
            let prefix = shared.count * pageSize
            let count = min(entry.knownTokens - prefix, budget)
            guard let pages = allocator.allocate(pagesNeeded(forTokens: prefix + count) - shared.count) else { break }
            allocator.share(shared)
            sharedPromptTokens += prefix
            var admitted = waiting.remove(at: position)
            admitted.pages = shared + pages
            admitted.computedTokens = prefix
            budget -= count
            work.append(take(&admitted, count: count))
            running.append(admitted)
        }
        verifyInvariants()
        return work
    }

    /// The pages a waiting request takes from a running member of its group, whose KV before this step (less what
    /// `scheduled` computes) covers the request's prefix; empty when no member runs (it computes its prompt itself),
    /// nil while the members running have not computed the prefix yet (it waits for them).
    private func sharedPages(for entry: Entry, scheduled: [Work]) -> [Int32]? {
        guard entry.group != nil else { return [] }
        let members = running.filter { $0.group == entry.group && $0.adapter == entry.adapter }
        if members.isEmpty { return [] }
        let donor = members.first { member in
            member.computedTokens - (scheduled.first { $0.id == member.id }?.count ?? 0) >= entry.prefixTokens
        }
        return donor.map { Array($0.pages.prefix(entry.prefixTokens / pageSize)) }
    }

    /// Advances the entry's computed tokens and describes the work.
    private func take(_ entry: inout Entry, count: Int) -> Work {
        entry.computedTokens += count
        return Work(id: entry.id, count: count, contextLength: entry.computedTokens, pages: entry.pages,
                    samples: entry.computedTokens == entry.knownTokens)
    }

    /// Gives running[index] the pages for `count` more tokens, preempting the newest running requests as needed.
    /// False when running[index] itself had to be preempted.
    private mutating func reservePages(forRunning index: Int, count: Int) -> Bool {
        let needed = pagesNeeded(forTokens: running[index].computedTokens + count) - running[index].pages.count
        while needed > allocator.freeCount {
            let newest = running.count - 1
            preempt(newest)
            if newest == index { return false }
        }
        if needed > 0 { running[index].pages += allocator.allocate(needed)! }
        return true
    }

    /// Frees a running request's pages and puts it back at the front of the queue, to be recomputed from scratch.
    private mutating func preempt(_ index: Int) {
        var entry = running.remove(at: index)
        allocator.release(entry.pages)
        entry.pages = []
        entry.computedTokens = 0
        entry.preemptions += 1
        waiting.insert(entry, at: 0)
    }

    /// The allocator counts each page's owners; a page owned twice is full (in the KV cache) in each owner, so none
    /// writes it again.
    public func verifyInvariants() {
        #if DEBUG
        precondition(waiting.allSatisfy { $0.pages.isEmpty }, "a waiting request holds pages")
        var owners: [Int32: Int] = [:]
        for entry in running {
            precondition(Set(entry.pages).count == entry.pages.count, "a request owns a KV page twice")
            for (index, page) in entry.pages.enumerated() {
                owners[page, default: 0] += 1
                precondition(allocator.holderCount(page) == 1 || entry.computedTokens >= (index + 1) * pageSize,
                             "a shared KV page is not full in request \(entry.id)")
            }
        }
        precondition(owners.count == allocator.usedCount, "KV pages leaked: \(allocator.usedCount) in use, \(owners.count) owned")
        precondition(owners.allSatisfy { allocator.holderCount($0.key) == $0.value }, "a KV page's holders are miscounted")
        #endif
    }
}
