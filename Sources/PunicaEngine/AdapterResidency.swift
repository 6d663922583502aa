/// Where every registered adapter is, from its directory to a slot a step reads: the one home of adapter residency.
/// Pure bookkeeping (no I/O, no clock): `plan` and the reports say what to do as `Action`s, which the engine carries
/// out in order.
///
///     registered ──load──▶ loading ──loaded──▶ onHost ──upload──▶ resident(slot)
///          ▲                  │ failed            │ host copy dropped    │ slot evicted: onHost when the host
///          └──────────────────┴───────────────────┘                      │ copy was kept, else registered
///
/// Slots are bounded (`slotCount`); an adapter a running request uses keeps its slot, the others go least recently
/// used first, those no waiting request wants before those it does. The host tier holds converted adapters (on host,
/// and resident ones whose host copy was kept, so a re-upload is one copy), bounded by `hostBudget` bytes; the least
/// recently used copies go first, never one that a waiting request still needs to reach a slot. Loads of the
/// adapters waiting requests want start as soon as there is a loader free (`maxLoads`), first come first served, so
/// an adapter is on host before its request's turn; prefetching stops while what waits on host fills the budget.
public struct AdapterResidency: Sendable {
    public enum State: Equatable, Sendable {
        case registered, loading, onHost
        case resident(slot: Int)
    }

    public enum Action: Equatable, Sendable {
        /// Read the adapter from disk into host memory, off the step loop, then report `loaded` or `loadFailed` with
        /// the same ticket.
        case load(String, ticket: Int)
        /// Free the adapter's host copy.
        case dropHost(String)
        /// Empty the slot (its device copy goes).
        case evict(slot: Int)
        /// Copy the adapter's host copy into the slot.
        case upload(String, slot: Int)
    }

    private struct Entry {
        var state = State.registered
        /// Bytes of the host copy, nil when there is none.
        var hostBytes: Int?
        /// The ticket of the latest load started; a report with another ticket is stale.
        var ticket = 0
        var lastUse = 0
    }

    public let slotCount: Int
    public let hostBudget: Int
    public let maxLoads: Int
    private var entries: [String: Entry] = [:]
    /// Adapters by slot, nil for a free slot.
    public private(set) var occupants: [String?]
    /// Loads started and not yet reported, stale ones included (they still hold a loader).
    public private(set) var loadsInFlight = 0
    /// Bytes of every host copy.
    public private(set) var hostBytes = 0
    /// Bumped by every change of a state or host copy (not by use), so readers copy `states` only when it changed.
    public private(set) var version = 0
    private var clock = 0
    private var nextTicket = 0

    public init(slots: Int, hostBudget: Int, maxLoads: Int) {
        precondition(slots > 0 && maxLoads > 0 && hostBudget >= 0, "at least one slot and one loader")
        slotCount = slots
        self.hostBudget = hostBudget
        self.maxLoads = maxLoads
        occupants = Array(repeating: nil, count: slots)
    }

    public func state(of name: String) -> State? { entries[name]?.state }

    public func slot(of name: String) -> Int? {
        if case let .resident(slot)? = entries[name]?.state { slot } else { nil }
    }

    /// The adapters a step can use: those in a slot.
    public var ready: Set<String> { Set(occupants.compactMap { $0 }) }

    /// Every registered adapter's state (for stats).
    public var states: [String: State] { entries.mapValues(\.state) }

    public mutating func register(_ name: String) {
        guard entries[name] == nil else { return }
        entries[name] = Entry()
        version += 1
    }

    /// Forgets an adapter no request uses; a load in flight reports stale.
    public mutating func unregister(_ name: String) -> [Action] {
        guard let entry = entries.removeValue(forKey: name) else { return [] }
        version += 1
        hostBytes -= entry.hostBytes ?? 0
        var actions: [Action] = []
        if case let .resident(slot) = entry.state {
            occupants[slot] = nil
            actions.append(.evict(slot: slot))
        }
        if entry.hostBytes != nil { actions.append(.dropHost(name)) }
        return actions
    }

    /// A load finished with a host copy of `bytes`. False when the report is stale (the adapter was unregistered, or
    /// unregistered and registered again, while it loaded): the caller drops what it loaded; otherwise it keeps it as
    /// the adapter's host copy. The next `plan` brings the host tier back within budget.
    public mutating func loaded(_ name: String, ticket: Int, bytes: Int) -> Bool {
        loadsInFlight -= 1
        guard entries[name]?.ticket == ticket, entries[name]?.state == .loading else { return false }
        entries[name]!.state = .onHost
        entries[name]!.hostBytes = bytes
        hostBytes += bytes
        version += 1
        touch(name)
        return true
    }

    /// A load failed: the adapter is back to registered (a later request tries again). True when the report is
    /// current, so the caller fails the requests waiting for it.
    public mutating func loadFailed(_ name: String, ticket: Int) -> Bool {
        loadsInFlight -= 1
        guard entries[name]?.ticket == ticket, entries[name]?.state == .loading else { return false }
        entries[name]!.state = .registered
        version += 1
        return true
    }

    /// Before a step: the adapters of running requests (each resident) keep their slots; those of waiting requests,
    /// in queue order, get a slot when on host and one is free or held by an adapter of lower priority, and start
    /// loading when only registered.
    public mutating func plan(running: Set<String>, waiting: [String]) -> [Action] {
        var actions: [Action] = []
        for name in running {
            precondition(slot(of: name) != nil, "a running request's adapter \(name) is resident")
            touch(name)
        }
        let wanted = running.union(waiting)
        var kept = running  // adapters whose slot this plan will not take
        // Bytes of host copies waiting for a slot, summed when a load decision first needs it, then kept current.
        var waitingOnHost: Int?
        var seen: Set<String> = []
        for name in waiting where seen.insert(name).inserted {
            guard let entry = entries[name] else { continue }
            switch entry.state {
            case .resident:
                kept.insert(name)
                touch(name)
            case .onHost:
                guard let slot = freeOrVictimSlot(keeping: kept, wanted: wanted) else { continue }
                if let victim = occupants[slot] {
                    let hostCopy = entries[victim]!.hostBytes
                    entries[victim]!.state = hostCopy == nil ? .registered : .onHost
                    waitingOnHost? += hostCopy ?? 0
                    actions.append(.evict(slot: slot))
                }
                occupants[slot] = name
                entries[name]!.state = .resident(slot: slot)
                waitingOnHost? -= entry.hostBytes ?? 0
                actions.append(.upload(name, slot: slot))
                kept.insert(name)
                touch(name)
            case .loading:
                break
            case .registered:
                // Prefetch only while what waits on host for a slot leaves room in the budget; with nothing waiting
                // there and nothing loading, one load always starts, whatever the budget.
                guard loadsInFlight < maxLoads else { continue }
                let onHost = waitingOnHost ?? entries.values.reduce(0) { $0 + ($1.state == .onHost ? $1.hostBytes ?? 0 : 0) }
                waitingOnHost = onHost
                guard onHost < hostBudget || (onHost == 0 && loadsInFlight == 0) else { continue }
                nextTicket += 1
                entries[name]!.state = .loading
                entries[name]!.ticket = nextTicket
                loadsInFlight += 1
                actions.append(.load(name, ticket: nextTicket))
            }
        }
        actions += enforceHostBudget(wanted: wanted)
        if !actions.isEmpty { version += 1 }  // every change of state comes with an action
        return actions
    }

    /// A free slot, else the least recently used slot whose adapter is not kept, preferring adapters no request wants.
    private func freeOrVictimSlot(keeping kept: Set<String>, wanted: Set<String>) -> Int? {
        if let free = occupants.firstIndex(of: nil) { return free }
        return occupants.indices.filter { !kept.contains(occupants[$0]!) }.min { left, right in
            let (a, b) = (occupants[left]!, occupants[right]!)
            return (wanted.contains(a) ? 1 : 0, entries[a]!.lastUse) < (wanted.contains(b) ? 1 : 0, entries[b]!.lastUse)
        }
    }

    /// Drops least recently used host copies while over budget; a copy on host that a waiting request wants (it has
    /// no other way to a slot) stays.
    private mutating func enforceHostBudget(wanted: Set<String>) -> [Action] {
        guard hostBytes > hostBudget else { return [] }
        var actions: [Action] = []
        let candidates = entries.filter { name, entry in
            entry.hostBytes != nil && !(entry.state == .onHost && wanted.contains(name))
        }.sorted { $0.value.lastUse < $1.value.lastUse }
        for (name, entry) in candidates where hostBytes > hostBudget {
            hostBytes -= entry.hostBytes!
            entries[name]!.hostBytes = nil
            if entry.state == .onHost { entries[name]!.state = .registered }
            actions.append(.dropHost(name))
        }
        return actions
    }

    private mutating func touch(_ name: String) {
        clock += 1
        entries[name]?.lastUse = clock
    }
}
