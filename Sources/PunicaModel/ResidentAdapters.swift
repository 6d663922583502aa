import PunicaCompute

/// The adapters a step can use, by slot (`LoRASegment.slot`), viewed per layer and projection as the LoRA ops
/// take them. Rebuilt whenever the resident set changes, never per step.
public struct ResidentAdapters {
    public let adapters: [LoRAAdapter?]
    /// [layer][FusedProjection.rawValue] → weights by slot.
    let projections: [[LoRAProjection]]
    /// Widest rank over every resident adapter: the width of the shrink output `v`.
    let maxRank: Int

    public init(_ adapters: [LoRAAdapter?], layerCount: Int) {
        self.adapters = adapters
        projections = (0..<layerCount).map { layer in
            FusedProjection.allCases.map { fused in LoRAProjection(adapters.map { $0?.weights[layer][fused.rawValue] }) }
        }
        maxRank = projections.joined().map(\.maxRank).max() ?? 0
    }

    public static let none = ResidentAdapters([], layerCount: 0)

    func projection(layer: Int, _ fused: FusedProjection) -> LoRAProjection? {
        projections.isEmpty ? nil : projections[layer][fused.rawValue]
    }
}
