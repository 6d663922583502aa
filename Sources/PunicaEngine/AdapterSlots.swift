/// Which adapters occupy the backend's adapter slots (the LoRA tables a step reads). Pure bookkeeping.
///
/// A slot goes to a free place, else to the least recently used adapter that no running request uses (the caller
/// passes those as `pinned`); when every slot is pinned, the adapter must wait.
public struct AdapterSlots: Sendable {
    public let capacity: Int
    private var occupant: [String?]
    private var lastUse: [Int]
    private var clock = 0

    public init(capacity: Int) {
        precondition(capacity > 0, "at least one adapter slot")
        self.capacity = capacity
        occupant = Array(repeating: nil, count: capacity)
        lastUse = Array(repeating: 0, count: capacity)
    }

    public func slot(of name: String) -> Int? { occupant.firstIndex(of: name) }

    /// Adapters in slot order (nil for free slots).
    public var occupants: [String?] { occupant }

    /// Marks `name` as used now (LRU order).
    public mutating func touch(_ name: String) {
        guard let slot = slot(of: name) else { return }
        clock += 1
        lastUse[slot] = clock
    }

    /// Puts `name` in a slot, evicting the least recently used unpinned adapter if none is free. Returns the slot and
    /// the evicted adapter, or nil when every slot holds a pinned adapter.
    public mutating func claim(_ name: String, pinned: Set<String>) -> (slot: Int, evicted: String?)? {
        if let slot = slot(of: name) { return (slot, nil) }
        let candidates = occupant.indices.filter { occupant[$0].map { !pinned.contains($0) } ?? true }
        guard let slot = candidates.min(by: { (occupant[$0] != nil ? 1 : 0, lastUse[$0]) < (occupant[$1] != nil ? 1 : 0, lastUse[$1]) })
        else { return nil }
        let evicted = occupant[slot]
        occupant[slot] = name
        clock += 1
        lastUse[slot] = clock
        return (slot, evicted)
    }

    /// Frees `name`'s slot (the adapter was unregistered).
    public mutating func remove(_ name: String) {
        if let slot = slot(of: name) { occupant[slot] = nil }
    }
}
