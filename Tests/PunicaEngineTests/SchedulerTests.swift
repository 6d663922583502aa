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

    /// Random arrivals, steps, samples, cancellations and tight memory: no page is ever owned twice (checked inside
    /// the scheduler in debug builds), every request either finishes or is removed, and every page comes back.
    @Test func randomizedWorkloadsLeakNoPages() {
        var random = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            var s = scheduler(maxRunning: 6, budget: 16, pageSize: 4, pages: 24)
            var remaining: [Int: Int] = [:]  // tokens each request still generates
            var nextID = 0
            for _ in 0..<300 {
                if Int.random(in: 0..<3, using: &random) == 0 {
                    s.add(id: nextID, adapter: ["a", "b", nil].randomElement(using: &random)!, knownTokens: Int.random(in: 1...30, using: &random))
                    remaining[nextID] = Int.random(in: 1...20, using: &random)
                    nextID += 1
                }
                for work in s.schedule(readyAdapters: Set(["a", "b"].filter { _ in Bool.random(using: &random) })) where work.samples {
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
        }
    }
}
