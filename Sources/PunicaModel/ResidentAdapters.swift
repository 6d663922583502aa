import PunicaCompute

/// The adapters a step can use, by slot (`LoRASegment.slot`), viewed per layer and projection as the LoRA ops
/// take them. Updated in place whenever the resident set changes, never per step: each projection's table keeps its
/// identity, so backends update their device tables where they are.
public final class ResidentAdapters {
    public private(set) var adapters: [LoRAAdapter?]
    /// [layer][FusedProjection.rawValue] → weights by slot.
    let projections: [[LoRAProjection]]
    /// The narrowest the LoRA shrink output `v` is made, whatever is resident (a recorded step keeps its `v`).
    let reservedRank: Int
    /// Width of the shrink output `v`: the widest fused rank resident, at least `reservedRank`.
    public private(set) var maxRank = 0

    public init(_ adapters: [LoRAAdapter?], layerCount: Int, reservedRank: Int = 0) {
        self.adapters = adapters
        self.reservedRank = reservedRank
        projections = (0..<layerCount).map { layer in
            FusedProjection.allCases.map { fused in LoRAProjection(adapters.map { $0?.weights[layer][fused.rawValue] }) }
        }
        maxRank = max(reservedRank, projections.joined().map(\.maxRank).max() ?? 0)
    }

    /// Puts `adapters` in the slots (as many as there are slots).
    public func update(_ adapters: [LoRAAdapter?]) {
        precondition(adapters.count == self.adapters.count, "one entry per slot")
        self.adapters = adapters
        for (layer, row) in projections.enumerated() {
            for (fused, projection) in row.enumerated() { projection.update(adapters.map { $0?.weights[layer][fused] }) }
        }
        maxRank = max(reservedRank, projections.joined().map(\.maxRank).max() ?? 0)
    }

    public static var none: ResidentAdapters { ResidentAdapters([], layerCount: 0) }

    /// Every projection's table (for a backend to bring up to date before replaying a recorded step).
    public var allProjections: [LoRAProjection] { Array(projections.joined()) }

    func projection(layer: Int, _ fused: FusedProjection) -> LoRAProjection? {
        projections.isEmpty ? nil : projections[layer][fused.rawValue]
    }
}
