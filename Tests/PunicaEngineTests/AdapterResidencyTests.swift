import PunicaEngine
import Testing

/// The residency state machine alone: no model, no engine; each test drives it with plans and load reports.
@Suite struct AdapterResidencyTests {
    typealias Action = AdapterResidency.Action

    func residency(slots: Int = 2, hostBudget: Int = 1000, maxLoads: Int = 4, registered names: [String]) -> AdapterResidency {
        var residency = AdapterResidency(slots: slots, hostBudget: hostBudget, maxLoads: maxLoads)
        for name in names { residency.register(name) }
        return residency
    }

    /// Loads every `.load` of `actions` with `bytes`, reporting success; returns the names loaded.
    @discardableResult
    func finishLoads(_ actions: [Action], _ residency: inout AdapterResidency, bytes: Int = 100) -> [String] {
        actions.compactMap { action in
            guard case let .load(name, ticket) = action else { return nil }
            let accepted = residency.loaded(name, ticket: ticket, bytes: bytes)
            #expect(accepted)
            return name
        }
    }

    @Test func aWaitingAdapterGoesFromRegisteredThroughHostToASlot() {
        var r = residency(registered: ["a"])
        #expect(r.state(of: "a") == .registered && r.state(of: "zzz") == nil)
        let load = r.plan(running: [], waiting: ["a"])
        guard case .load("a", _)? = load.first, load.count == 1 else { Issue.record("expected one load: \(load)"); return }
        #expect(r.state(of: "a") == .loading && r.loadsInFlight == 1 && r.ready.isEmpty)
        #expect(r.plan(running: [], waiting: ["a"]).isEmpty, "a load in flight is not started twice")
        finishLoads(load, &r)
        #expect(r.state(of: "a") == .onHost && r.hostBytes == 100 && r.loadsInFlight == 0)
        #expect(r.plan(running: [], waiting: ["a"]) == [.upload("a", slot: 0)])
        #expect(r.state(of: "a") == .resident(slot: 0) && r.slot(of: "a") == 0 && r.ready == ["a"])
        let version = r.version
        #expect(r.plan(running: ["a"], waiting: []).isEmpty, "a resident adapter needs nothing more")
        #expect(r.version == version, "use alone is no change of state")
        #expect(r.hostBytes == 100, "the host copy is kept while the budget allows")
    }

    /// Adapters of waiting requests load before their turn, first come first served, at most `maxLoads` at once.
    @Test func prefetchesInQueueOrderUpToTheLoaderCount() {
        var r = residency(maxLoads: 2, registered: ["a", "b", "c", "d"])
        let first = r.plan(running: [], waiting: ["c", "a", "c", "d", "b"])
        #expect(first.compactMap { if case let .load(name, _) = $0 { name } else { nil } } == ["c", "a"])
        #expect(r.loadsInFlight == 2 && r.state(of: "d") == .registered)
        finishLoads(first, &r)
        let second = r.plan(running: [], waiting: ["c", "a", "d", "b"])
        #expect(second.filter { if case .upload = $0 { true } else { false } } == [.upload("c", slot: 0), .upload("a", slot: 1)])
        #expect(second.compactMap { if case let .load(name, _) = $0 { name } else { nil } } == ["d", "b"])
    }

    /// Full slots: the victim is the least recently used adapter that no running request uses, one no request wants
    /// before one a later waiting request wants; with every slot running, the adapter waits on host.
    @Test func evictsTheLeastRecentlyUsedUnpinnedAdapter() {
        var r = residency(slots: 2, registered: ["a", "b", "c", "d"])
        finishLoads(r.plan(running: [], waiting: ["a", "b", "c", "d"]), &r)
        #expect(r.plan(running: [], waiting: ["a", "b"]) == [.upload("a", slot: 0), .upload("b", slot: 1)])
        _ = r.plan(running: ["b"], waiting: [])
        _ = r.plan(running: ["a"], waiting: [])  // a is now the more recently used
        #expect(r.plan(running: ["a", "b"], waiting: ["c"]).isEmpty, "every slot is pinned by a running request")
        #expect(r.state(of: "c") == .onHost)
        // b is least recently used, but the later waiting request wants it: a (wanted by no one) goes.
        #expect(r.plan(running: [], waiting: ["c", "b"]) == [.evict(slot: 0), .upload("c", slot: 0)])
        #expect(r.state(of: "a") == .onHost, "an evicted adapter keeps its host copy")
        #expect(r.plan(running: ["c"], waiting: ["d"]) == [.evict(slot: 1), .upload("d", slot: 1)])
        #expect(r.occupants == ["c", "d"])
    }

    /// Planning again with the same queue changes nothing: earlier requests' adapters keep the slots they got.
    @Test func aStableQueueDoesNotThrash() {
        var r = residency(slots: 1, registered: ["a", "b"])
        finishLoads(r.plan(running: [], waiting: ["a", "b"]), &r)
        #expect(r.plan(running: [], waiting: ["a", "b"]) == [.upload("a", slot: 0)])
        for _ in 0..<3 { #expect(r.plan(running: [], waiting: ["a", "b"]).isEmpty) }
    }

    /// Over budget, the least recently used host copies go first; one that a waiting request needs to reach a slot
    /// stays, and so do loads in flight.
    @Test func theHostTierKeepsToItsBudget() {
        var r = residency(slots: 1, hostBudget: 250, registered: ["a", "b", "c"])
        finishLoads(r.plan(running: [], waiting: ["a", "b"]), &r)
        #expect(r.plan(running: [], waiting: ["a", "b"]) == [.upload("a", slot: 0)])
        #expect(r.hostBytes == 200)
        // c loads beside them: 300 > 250 once it is on host; a (resident, least recently used copy) gives its copy up.
        let load = r.plan(running: ["a"], waiting: ["b", "c"])
        #expect(load.count == 1)
        finishLoads(load, &r)
        #expect(r.plan(running: ["a"], waiting: ["b", "c"]) == [.dropHost("a")])
        #expect(r.state(of: "a") == .resident(slot: 0) && r.hostBytes == 200)
        // Once nobody wants b or c, their copies are fair game; evicting a without a host copy sends it to registered.
        #expect(r.plan(running: [], waiting: ["b"]) == [.evict(slot: 0), .upload("b", slot: 0)])
        #expect(r.state(of: "a") == .registered)
    }

    /// Prefetching stops while adapters waiting on host for a slot fill the budget, but one load always starts when
    /// nothing waits on host and nothing loads, even with a budget of zero.
    @Test func prefetchStopsAtTheBudgetButNeverStalls() {
        var r = residency(slots: 1, hostBudget: 150, registered: ["a", "b", "c", "d", "e"])
        finishLoads(r.plan(running: [], waiting: ["a", "b", "c", "d"]), &r)  // 4 loads: nothing was on host yet
        let full = r.plan(running: [], waiting: ["a", "b", "c", "d", "e"])
        #expect(full == [.upload("a", slot: 0), .dropHost("a")], "b, c and d wait on host with 300 bytes: e does not load")
        #expect(r.state(of: "e") == .registered && r.hostBytes == 300)

        var zero = residency(slots: 1, hostBudget: 0, registered: ["a", "b"])
        let first = zero.plan(running: [], waiting: ["a", "b"])
        #expect(first.count == 1, "one load at a time without a host tier")
        finishLoads(first, &zero)
        let second = zero.plan(running: [], waiting: ["a", "b"])
        #expect(second.first == .upload("a", slot: 0) && second.last == .dropHost("a") && second.count == 3)
        guard case .load("b", _) = second[1] else { Issue.record("b loads once a has left the host: \(second)"); return }
        #expect(zero.hostBytes == 0 && zero.state(of: "a") == .resident(slot: 0))
    }

    @Test func aFailedLoadReturnsToRegisteredAndIsRetried() {
        var r = residency(registered: ["a"])
        guard case let .load(_, ticket)? = r.plan(running: [], waiting: ["a"]).first else { Issue.record("no load"); return }
        let current = r.loadFailed("a", ticket: ticket)
        #expect(current)
        #expect(r.state(of: "a") == .registered && r.loadsInFlight == 0 && r.hostBytes == 0)
        guard case let .load(_, retry)? = r.plan(running: [], waiting: ["a"]).first else { Issue.record("no retry"); return }
        #expect(retry != ticket)
    }

    /// Unregistering while a load runs: the load's report is stale (even after registering again), its loader is
    /// counted free, and a new load starts for the new registration.
    @Test func unregisterWhileLoadingMakesTheLoadStale() {
        var r = residency(maxLoads: 1, registered: ["a"])
        guard case let .load(_, ticket)? = r.plan(running: [], waiting: ["a"]).first else { Issue.record("no load"); return }
        #expect(r.unregister("a").isEmpty)
        #expect(r.state(of: "a") == nil)
        r.register("a")
        #expect(r.plan(running: [], waiting: ["a"]).isEmpty, "the only loader is still busy with the stale load")
        let accepted = r.loaded("a", ticket: ticket, bytes: 100)
        #expect(!accepted)
        #expect(r.state(of: "a") == .registered && r.hostBytes == 0 && r.loadsInFlight == 0)
        guard case .load("a", _)? = r.plan(running: [], waiting: ["a"]).first else { Issue.record("no new load"); return }
        #expect(r.state(of: "a") == .loading && r.loadsInFlight == 1)
    }

    @Test func aStaleFailureChangesNothing() {
        var r = residency(registered: ["a"])
        guard case let .load(_, ticket)? = r.plan(running: [], waiting: ["a"]).first else { Issue.record("no load"); return }
        _ = r.unregister("a")
        r.register("a")
        let current = r.loadFailed("a", ticket: ticket)
        #expect(!current)
        #expect(r.state(of: "a") == .registered && r.loadsInFlight == 0)
    }

    @Test func unregisterFreesTheSlotAndTheHostCopy() {
        var r = residency(registered: ["a", "b"])
        finishLoads(r.plan(running: [], waiting: ["a", "b"]), &r)
        _ = r.plan(running: [], waiting: ["a"])
        #expect(r.unregister("a") == [.evict(slot: 0), .dropHost("a")])
        #expect(r.unregister("b") == [.dropHost("b")])
        #expect(r.occupants == [nil, nil] && r.hostBytes == 0 && r.states.isEmpty)
    }

    /// Random plans, reports and unregistrations: a running adapter always keeps its slot, slots and states agree, no
    /// adapter is in two slots, and loads in flight never exceed the loader count.
    @Test func randomizedDrivesKeepTheInvariants() {
        var random = SystemRandomNumberGenerator()
        let names = (0..<8).map { "a\($0)" }
        for _ in 0..<20 {
            var r = residency(slots: 3, hostBudget: 350, maxLoads: 2, registered: names)
            var inFlight: [(String, Int)] = []
            var running: Set<String> = []
            for _ in 0..<200 {
                if Bool.random(using: &random), let index = inFlight.indices.randomElement(using: &random) {
                    let (name, ticket) = inFlight.remove(at: index)
                    if Int.random(in: 0..<5, using: &random) == 0 { _ = r.loadFailed(name, ticket: ticket) } else { _ = r.loaded(name, ticket: ticket, bytes: 100) }
                }
                running = running.filter { _ in Int.random(in: 0..<4, using: &random) != 0 }
                if Int.random(in: 0..<20, using: &random) == 0, let name = names.randomElement(using: &random), !running.contains(name) {
                    _ = r.unregister(name)
                    r.register(name)
                }
                let waiting = (0..<Int.random(in: 0..<6, using: &random)).map { _ in names.randomElement(using: &random)! }
                for action in r.plan(running: running, waiting: waiting) {
                    if case let .load(name, ticket) = action { inFlight.append((name, ticket)) }
                }
                // Some ready waiting adapters start running.
                running.formUnion(waiting.filter { r.ready.contains($0) && Bool.random(using: &random) })
                #expect(running.allSatisfy { r.slot(of: $0) != nil })
                #expect(r.loadsInFlight == inFlight.count && r.loadsInFlight <= 2)
                let occupants = r.occupants.compactMap { $0 }
                #expect(Set(occupants).count == occupants.count)
                for (slot, name) in r.occupants.enumerated() { #expect(name.map { r.state(of: $0) == .resident(slot: slot) } ?? true) }
                #expect(r.states.filter { if case .resident = $0.value { true } else { false } }.count == occupants.count)
            }
        }
    }
}
