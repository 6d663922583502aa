import PunicaEngine
import Testing

@Suite struct SchedulerTests {
    func scheduler(maxRunning: Int = 8, budget: Int = 8, pageSize: Int = 4, pages: Int = 64) -> Scheduler {
        Scheduler(configuration: .init(maxRunning: maxRunning, maxTokensPerStep: budget), pageSize: pageSize, pageCount: pages)
    }

    func counts(_ work: [Scheduler.Work]) -> [Int: Int] { Dictionary(uniqueKeysWithValues: work.map { ($0.id, $0.count) }) }

    @Test func promptsArePrefilledInChunksUnderTheBudgetAlongsideDecodes() {
        var s = scheduler(budget: 8)
        s.add(id: 0, adapter: nil, knownTokens: 10)
        s.add(id: 1, adapter: nil, knownTokens: 5)
        var step = s.schedule(readyAdapters: [])
        #expect(counts(step) == [0: 8] && step[0].samples == false)
        step = s.schedule(readyAdapters: [])
        #expect(counts(step) == [0: 2, 1: 5] && step.allSatisfy(\.samples))
        s.appendToken(id: 0)
        s.appendToken(id: 1)
        step = s.schedule(readyAdapters: [])
        #expect(counts(step) == [0: 1, 1: 1])
        #expect(step.first { $0.id == 0 }?.contextLength == 11)
    }

    @Test func admitsFirstComeFirstServedUpToTheRunningLimit() {
        var s = scheduler(maxRunning: 2, budget: 100)
        for id in 0..<4 { s.add(id: id, adapter: nil, knownTokens: 3) }
        #expect(Set(counts(s.schedule(readyAdapters: [])).keys) == [0, 1])
        s.appendToken(id: 1)
        s.remove(id: 0)
        #expect(Set(counts(s.schedule(readyAdapters: [])).keys) == [1, 2])
    }

    @Test func requestsWhoseAdapterIsNotReadyWaitWithoutBlockingOthers() {
        var s = scheduler(budget: 100)
        s.add(id: 0, adapter: "loading", knownTokens: 3)
        s.add(id: 1, adapter: "ready", knownTokens: 3)
        s.add(id: 2, adapter: nil, knownTokens: 3)
        #expect(Set(counts(s.schedule(readyAdapters: ["ready"])).keys) == [1, 2])
        #expect(s.waiting.map(\.id) == [0])
        #expect(Set(counts(s.schedule(readyAdapters: ["ready", "loading"])).keys) == [0])
    }

    /// 5 usable pages of 4 tokens: two requests outgrow them; the newest is preempted to be recomputed, and nothing
    /// fails.
    @Test func runningOutOfPagesPreemptsTheNewestRequest() {
        var s = scheduler(budget: 100, pageSize: 4, pages: 6)
        s.add(id: 0, adapter: nil, knownTokens: 8)
        s.add(id: 1, adapter: nil, knownTokens: 8)
        #expect(Set(counts(s.schedule(readyAdapters: [])).keys) == [0, 1])  // 4 of 5 pages
        s.appendToken(id: 0)
        s.appendToken(id: 1)
        let step = s.schedule(readyAdapters: [])  // request 0 needs a 5th page; then request 1 needs a 6th: preempted
        #expect(counts(step) == [0: 1])
        #expect(s.waiting.map(\.id) == [1] && s.waiting[0].preemptions == 1 && s.waiting[0].computedTokens == 0)
        s.remove(id: 0)
        let resumed = s.schedule(readyAdapters: [])
        #expect(counts(resumed) == [1: 9], "recomputes its prompt and its generated token")
    }

    /// Three choices of a 10-token prompt, pages of 4: the first computes the prompt; the others wait for it, then
    /// take its two full pages (tokens 0..<8) and compute tokens 8 and 9 (the last page's, which decoding writes
    /// on) themselves. A request of another group shares nothing.
    @Test func aGroupSharesItsPromptsFullPagesBelowTheLastToken() throws {
        var s = scheduler(budget: 100)
        for id in 0..<3 { s.add(id: id, adapter: "a", knownTokens: 10, group: "g") }
        s.add(id: 3, adapter: "a", knownTokens: 10, group: "other")
        let first = s.schedule(readyAdapters: ["a"])
        #expect(counts(first) == [0: 10, 3: 10], "members wait while the first computes the prompt")
        s.appendToken(id: 0)
        s.appendToken(id: 3)
        let second = s.schedule(readyAdapters: ["a"])
        #expect(counts(second) == [0: 1, 3: 1, 1: 2, 2: 2])
        let leader = try #require(s.running.first { $0.id == 0 }).pages
        for id in [1, 2] {
            let work = try #require(second.first { $0.id == id })
            #expect(work.contextLength == 10 && work.samples, "prefills positions 8 and 9")
            #expect(Array(work.pages.prefix(2)) == Array(leader.prefix(2)) && !leader.contains(work.pages[2]))
        }
        #expect(leader.prefix(2).allSatisfy { s.allocator.holderCount($0) == 3 })
        #expect(s.running.flatMap(\.pages).filter { s.allocator.holderCount($0) > 1 }.count == 6)
        #expect(s.sharedPromptTokens == 16)
        #expect(s.allocator.usedCount == 3 + 3 + 1 + 1)
    }

    /// Prompts of at most one page, or one whose last token starts a page, share what lies below it: nothing, or
    /// its full pages.
    @Test func onlyFullPagesBelowTheLastTokenAreShared() {
        for (tokens, shared) in [(1, 0), (4, 0), (5, 4), (8, 4), (9, 8)] {
            var s = scheduler(budget: 100)
            s.add(id: 0, adapter: nil, knownTokens: tokens, group: "g")
            s.add(id: 1, adapter: nil, knownTokens: tokens, group: "g")
            _ = s.schedule(readyAdapters: [])
            s.appendToken(id: 0)
            if shared == 0 { s.appendToken(id: 1) }
            _ = s.schedule(readyAdapters: [])
            #expect(s.sharedPromptTokens == shared, "\(tokens) tokens")
        }
    }

    /// However the members of a group end (finished, cancelled, one still waiting), the shared pages stay held
    /// while any holder runs and are free exactly when the last one ends.
    @Test func sharedPagesAreFreeWhenTheirLastHolderEnds() {
        for order in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            var s = scheduler(budget: 100)
            for id in 0..<3 { s.add(id: id, adapter: nil, knownTokens: 10, group: "g") }
            _ = s.schedule(readyAdapters: [])
            s.appendToken(id: 0)
            _ = s.schedule(readyAdapters: [])
            let shared = Array(s.running[0].pages.prefix(2))
            for (ended, id) in order.enumerated() {
                s.remove(id: id)
                let holders = 2 - ended
                #expect(shared.allSatisfy { s.allocator.holderCount($0) == holders }, "\(order) after \(id)")
                #expect(s.allocator.usedCount == (holders == 0 ? 0 : 2 + holders), "\(order) after \(id)")
            }
        }
        // A member cancelled while waiting for the prompt holds nothing.
        var s = scheduler(budget: 100)
        s.add(id: 0, adapter: nil, knownTokens: 10, group: "g")
        s.add(id: 1, adapter: nil, knownTokens: 10, group: "g")
        _ = s.schedule(readyAdapters: [])
        s.remove(id: 1)
        #expect(s.allocator.usedCount == 3)
        s.remove(id: 0)
        #expect(s.allocator.usedCount == 0)
    }

    /// 6 usable pages: request 9 (one page) and a group of two (a 10-token prompt: 2 shared pages and one each).
    /// When the first member outgrows its pages the newest, the second member, is preempted: only its own page comes
    /// back, the shared ones stay with the first. Back in, it shares them again and recomputes only past them; with
    /// no member running it computes everything itself.
    @Test func aPreemptedMemberGivesBackOnlyItsOwnPages() throws {
        func preempted() -> (Scheduler, shared: [Int32]) {
            var s = scheduler(budget: 100, pageSize: 4, pages: 7)
            s.add(id: 9, adapter: nil, knownTokens: 4)
            s.add(id: 0, adapter: nil, knownTokens: 10, group: "g")
            s.add(id: 1, adapter: nil, knownTokens: 10, group: "g")
            _ = s.schedule(readyAdapters: [])
            for _ in 0..<2 {
                for entry in s.running { s.appendToken(id: entry.id) }
                _ = s.schedule(readyAdapters: [])
            }
            #expect(s.running.map(\.id) == [9, 0, 1] && s.allocator.freeCount == 0)
            let shared = Array(s.running[1].pages.prefix(2))
            for entry in s.running { s.appendToken(id: entry.id) }
            let step = s.schedule(readyAdapters: [])  // request 0 reaches 13 tokens: a fourth page
            #expect(counts(step) == [9: 1, 0: 1])
            #expect(s.waiting.map(\.id) == [1] && s.waiting[0].preemptions == 1)
            #expect(shared.allSatisfy { s.allocator.holderCount($0) == 1 } && s.allocator.freeCount == 0)
            return (s, shared)
        }
        var (s, shared) = preempted()
        s.remove(id: 9)
        s.appendToken(id: 0)
        var resumed = s.schedule(readyAdapters: [])
        #expect(counts(resumed) == [0: 1, 1: 4], "shares tokens 0..<8 again, recomputes its prompt's last two and its two generated")
        #expect(Array(try #require(resumed.first { $0.id == 1 }).pages.prefix(2)) == shared)

        (s, _) = preempted()
        s.remove(id: 0)
        s.appendToken(id: 9)
        resumed = s.schedule(readyAdapters: [])
        #expect(counts(resumed) == [9: 1, 1: 12], "computes its prompt and its generated tokens")
        s.remove(id: 9)
        s.remove(id: 1)
        #expect(s.allocator.usedCount == 0)
    }

    /// Random arrivals (some in groups of up to four choices of one prompt), steps, samples, cancellations and tight
    /// memory, with the KV cache modelled: each step first reads its context (every position before its new tokens
    /// must hold what that request wrote there, or its group's prompt) and then writes its new tokens, never into a
    /// page another request holds. No page is ever miscounted (checked inside the scheduler in debug builds), every
    /// request either finishes or is removed, and every page comes back.
    @Test func randomizedWorkloadsReadWhatTheyWroteAndLeakNoPages() {
        struct Request { let prompt: String; let promptTokens: Int }
        var random = SystemRandomNumberGenerator()
        var shared = 0
        for _ in 0..<20 {
            var s = scheduler(maxRunning: 6, budget: 16, pageSize: 4, pages: 24)
            var remaining: [Int: Int] = [:]  // tokens each request still generates
            var requests: [Int: Request] = [:]
            // What each KV slot holds: the prompt (a group's or a request's own) or request's generated token at a position.
            var cache: [Int32: [String?]] = [:]
            func content(_ id: Int, _ position: Int) -> String {
                position < requests[id]!.promptTokens ? "\(requests[id]!.prompt)@\(position)" : "\(id)@\(position)"
            }
            var nextID = 0
            for round in 0..<300 {
                if Int.random(in: 0..<3, using: &random) == 0 {
                    let members = Bool.random(using: &random) ? 1 : Int.random(in: 2...4, using: &random)
                    let (adapter, tokens) = (["a", "b", nil].randomElement(using: &random)!, Int.random(in: 1...30, using: &random))
                    for _ in 0..<members {
                        requests[nextID] = Request(prompt: members > 1 ? "g\(round)" : "p\(nextID)", promptTokens: tokens)
                        s.add(id: nextID, adapter: adapter, knownTokens: tokens, group: members > 1 ? "g\(round)" : nil)
                        remaining[nextID] = Int.random(in: 1...20, using: &random)
                        nextID += 1
                    }
                }
                let step = s.schedule(readyAdapters: Set(["a", "b"].filter { _ in Bool.random(using: &random) }))
                for work in step {
                    for position in 0 ..< work.contextLength - work.count {
                        #expect(cache[work.pages[position / 4]]?[position % 4] == content(work.id, position), "request \(work.id) at \(position)")
                    }
                }
                for work in step {
                    for position in work.contextLength - work.count ..< work.contextLength {
                        let page = work.pages[position / 4]
                        #expect(s.allocator.holderCount(page) == 1, "request \(work.id) writes shared page \(page)")
                        cache[page, default: Array(repeating: nil, count: 4)][position % 4] = content(work.id, position)
                    }
                }
                for work in step where work.samples {
                    s.appendToken(id: work.id)
                    remaining[work.id]! -= 1
                    if remaining[work.id] == 0 { s.remove(id: work.id) }
                }
                if Int.random(in: 0..<10, using: &random) == 0, let victim = remaining.keys.randomElement(using: &random) {
                    s.remove(id: victim)
                    remaining[victim] = 0
                }
                s.verifyInvariants()
            }
            for id in 0..<nextID { s.remove(id: id) }
            #expect(s.isIdle && s.allocator.usedCount == 0)
            shared += s.sharedPromptTokens
        }
        #expect(shared > 0, "groups shared their prompts")
    }
}
