#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute

/// A PEFT LoRA adapter uploaded to a backend, its scale folded into B: the form a slot holds. Loaded adapters come
/// from a `HostAdapter` (one device allocation, one copy); benchmarks and tests also build them from tensors.
public final class LoRAAdapter {
    public let name: String
    public let directory: String
    public let rank: Int
    /// lora_alpha / r, or lora_alpha / √r with rsLoRA; at most `maxScale` in magnitude.
    public let scale: Float
    public let targets: Set<Projection>
    /// [layer][FusedProjection.rawValue]: nil where the adapter targets none of the fused projection's parts.
    let weights: [[LoRAWeights?]]

    /// The largest |scale| an adapter may have. Real ones use 0.25–16 (alpha = r or 2r; rsLoRA α/√r); a scale far
    /// beyond that is a broken config, and would push the folded B out of `maxValue`.
    public static let maxScale: Double = 1024
    /// The largest magnitude of any A or scaled-B value: float16's largest finite value, so the weights stay finite
    /// in every storage type a backend uses. Values beyond it are refused at load, like NaN and ∞.
    public static let maxValue: Float = 65504

    /// Reads, converts and uploads the adapter of `directory` (`HostAdapter`, then one upload): its part for `shard`
    /// of a split model.
    public convenience init(name: String, directory: String, config: ModelConfig, backend: Backend, shard: Shard = .whole) throws {
        self.init(try HostAdapter(name: name, directory: directory, config: config, ranks: [(backend, shard)]), backend: backend)
    }

    /// Uploads a host adapter (its slab for rank `modelRank` of a split model) into one device allocation; its tensors
    /// are views of it.
    public init(_ host: HostAdapter, backend: Backend, modelRank: Int = 0) {
        let slab = host.slabs[modelRank]
        let views = slab.layout.joined().compactMap { $0 }.flatMap { [$0.a] + $0.pieces.map(\.b) }
        var tensors = backend.weights(slab: slab.buffer, views: views.map { ($0.offset, $0.shape) }).makeIterator()
        weights = slab.layout.map { layer in
            layer.map { fused in
                fused.map { fused in
                    let a = tensors.next()!
                    return LoRAWeights(a: a, pieces: fused.pieces.map {
                        LoRAWeights.Piece(b: tensors.next()!, rankOffset: $0.rankOffset, outputOffset: $0.outputOffset)
                    })
                }
            }
        }
        name = host.name
        directory = host.directory
        rank = host.rank
        scale = host.scale
        targets = host.targets
    }

    /// Checks everything loading would check (config, scale, tensor names, every expected tensor, its shape and its
    /// values) without uploading anything: registration validates adapters before their first use.
    public static func validate(directory: String, config: ModelConfig) throws {
        try validate(parse(directory: directory, config: config), config: config)
    }

    /// `validate` on the two files' contents, with no file I/O (fuzzing); `directory` names them in errors.
    public static func validate(configJSON: Data, weights: SafeTensorsFile, directory: String, config: ModelConfig) throws {
        try validate(parse(configJSON: configJSON, weights: weights, directory: directory, config: config), config: config)
    }

    private static func validate(_ parsed: (rank: Int, scale: Float, targets: Set<Projection>, tensors: LoRATensors), config: ModelConfig) throws {
        for layer in 0..<config.layerCount {
            for projection in parsed.targets {
                let (outputs, inputs) = projection.weightShape(config)
                let key = LoRATensorKey(layer: layer, projection: projection)
                try parsed.tensors.requireValues(parsed.tensors.require(key, matrix: .a, shape: [parsed.rank, inputs]), matrix: .a)
                try parsed.tensors.requireValues(parsed.tensors.require(key, matrix: .b, shape: [outputs, parsed.rank]), matrix: .b)
            }
        }
    }

    /// What `parse` reads: the config's rank, scale and targets, and the weights file's tensors.
    typealias Parsed = (rank: Int, scale: Float, targets: Set<Projection>, tensors: LoRATensors)

    static func parse(directory: String, config: ModelConfig) throws
        -> Parsed {
        let configJSON = try readRegularFile(directory + "/adapter_config.json", expected: "a JSON file")
        let path = directory + "/adapter_model.safetensors"
        guard FileManager.default.fileExists(atPath: path) else {
            let pickle = FileManager.default.fileExists(atPath: directory + "/adapter_model.bin")
            throw ModelError.missingFile(path: path, expected: pickle
                ? "safetensors weights; adapter_model.bin (pickle) is not loaded, re-save with safe_serialization=True"
                : "the adapter's weights")
        }
        return try parse(configJSON: configJSON, weights: SafeTensorsFile(path: path), directory: directory, config: config)
    }

    private static func parse(configJSON: Data, weights: SafeTensorsFile, directory: String, config: ModelConfig) throws
        -> Parsed {
        let configPath = directory + "/adapter_config.json"
        let settings = try decodeJSON(AdapterConfig.self, from: configJSON, path: configPath)
        let targets = try settings.validatedTargets(path: configPath)
        let projections = Projection.of(config)
        if let foreign = Projection.allCases.first(where: { targets.contains($0) && !projections.contains($0) }) {
            throw ModelError.unsupported(path: configPath, field: "target_modules", value: "\"\(foreign.rawValue)\"",
                                         supported: "\(config.architecture.rawValue)'s \(projections.map(\.rawValue).joined(separator: ", "))")
        }
        let rank = settings.r
        let scale = settings.use_rslora == true ? settings.lora_alpha / Double(rank).squareRoot() : settings.lora_alpha / Double(rank)
        guard scale.magnitude <= maxScale else {  // false for NaN too
            throw ModelError.invalidValue(path: configPath, field: "lora_alpha", reason:
                "\(settings.lora_alpha) gives the scale \(scale) (lora_alpha / \(settings.use_rslora == true ? "√r" : "r")), beyond ±\(maxScale)")
        }
        return (rank, Float(scale), targets, try loraTensors(weights, config: config, targets: targets, scale: Float(scale)))
    }

    /// A random adapter (uniform A and B) for benchmarks: its part for `shard` of a split model.
    public static func random(name: String, rank: Int, targets: Set<Projection>, config: ModelConfig, backend: Backend,
                              seed: UInt64, shard: Shard = .whole) -> LoRAAdapter {
        var counter = seed << 32
        return try! LoRAAdapter(name: name, rank: rank, targets: targets, config: config, backend: backend, shard: shard) { _, _, shape in
            counter &+= 1
            return backend.randomWeight(shape: shape, scale: 1 / Float(shape.last!).squareRoot(), seed: counter)
        }
    }

    /// An adapter of scale 1 built from tensors; `matrix(key, .a/.b, shape)` supplies each A and B (`shard`'s part).
    convenience init(name: String, rank: Int, targets: Set<Projection>, config: ModelConfig, backend: Backend, shard: Shard = .whole,
                     matrix: (LoRATensorKey, LoRATensors.Matrix, [Int]) throws -> Tensor) throws {
        let weights = try config.fusedLoRALayout(targets: targets, rank: rank, shard: shard).map { layer in
            try layer.map { fused in
                try fused.map { parts -> LoRAWeights in
                    let aParts = try parts.map { try matrix($0.key, .a, [rank, $0.inputs]) }
                    return LoRAWeights(a: aParts.count == 1 ? aParts[0] : backend.concatenateRows(aParts), pieces: try parts.map {
                        LoRAWeights.Piece(b: try matrix($0.key, .b, [$0.outputs, rank]), rankOffset: $0.rankOffset, outputOffset: $0.outputOffset)
                    })
                }
            }
        }
        self.init(name: name, directory: "", rank: rank, scale: 1, targets: targets, weights: weights)
    }

    private init(name: String, directory: String, rank: Int, scale: Float, targets: Set<Projection>, weights: [[LoRAWeights?]]) {
        self.name = name
        self.directory = directory
        self.rank = rank
        self.scale = scale
        self.targets = targets
        self.weights = weights
    }

    /// The tensors of `adapter_model.safetensors`, accepting only lora_A/lora_B weights of targeted decoder projections.
    private static func loraTensors(_ file: SafeTensorsFile, config: ModelConfig, targets: Set<Projection>, scale: Float) throws -> LoRATensors {
        let path = file.path
        var found: [LoRATensorKey: [LoRATensors.Matrix: TensorData]] = [:]
        for name in file.tensorNames {
            guard let (key, matrix) = parseLoRATensorName(name, layerCount: config.layerCount) else {
                throw ModelError.unexpectedTensor(path: path, tensor: name, reason:
                    "is not a LoRA weight of a decoder projection (DoRA magnitudes, LoRA biases, embedding/lm_head LoRA and modules_to_save are not supported)")
            }
            guard targets.contains(key.projection) else {
                throw ModelError.unexpectedTensor(path: path, tensor: name, reason: "belongs to \(key.projection.rawValue), which target_modules does not list")
            }
            found[key, default: [:]][matrix] = file.tensor(name)
        }
        return LoRATensors(path: path, found: found, scale: scale)
    }
}

struct LoRATensorKey: Hashable {
    let layer: Int
    let projection: Projection
}

/// The adapter file's tensors by (layer, projection) and A/B.
struct LoRATensors {
    enum Matrix: String { case a = "lora_A", b = "lora_B" }

    let path: String
    let found: [LoRATensorKey: [Matrix: TensorData]]
    /// Folded into B when it is uploaded, so B's values are checked with it.
    let scale: Float

    /// The tensor, checked for its shape (its values: `requireValues`, or as `HostAdapter` converts them).
    func require(_ key: LoRATensorKey, matrix: Matrix, shape: [Int]) throws -> TensorData {
        let name = "base_model.model.\(key.projection.checkpointName(layer: key.layer)).\(matrix.rawValue).weight"
        guard let tensor = found[key]?[matrix] else { throw ModelError.missingTensor(path: path, tensor: name) }
        guard tensor.shape == shape else {
            throw ModelError.tensorShape(path: path, tensor: tensor.name, expected: shape, actual: tensor.shape)
        }
        return tensor
    }

    /// What B is multiplied by when it is uploaded.
    func factor(_ matrix: Matrix) -> Float { matrix == .a ? 1 : scale }

    /// What every value of A, and of B times `scale`, must be.
    func rule(_ matrix: Matrix) -> String {
        "LoRA values\(matrix == .a ? "" : " × scale \(scale)") must be finite and within ±\(LoRAAdapter.maxValue)"
    }

    /// Checks every value of `tensor` as loading would.
    func requireValues(_ tensor: TensorData, matrix: Matrix) throws {
        let factor = factor(matrix)
        try tensor.requireValues(path: path, rule: rule(matrix)) { ($0 * factor).magnitude <= LoRAAdapter.maxValue }  // false for NaN
    }
}

/// Parses `base_model.model.model.layers.<i>.<self_attn|mlp>.<proj>.lora_<A|B>[.<adapter>].weight`, as PEFT
/// writes it; nil for anything else.
func parseLoRATensorName(_ name: String, layerCount: Int) -> (LoRATensorKey, LoRATensors.Matrix)? {
    let parts = name.split(separator: ".").map(String.init)
    guard parts.count == 9 || parts.count == 10, parts.prefix(4) == ["base_model", "model", "model", "layers"],
          parts.last == "weight", let layer = Int(parts[4]), (0..<layerCount).contains(layer),
          let projection = Projection(rawValue: parts[6]), parts[5] == projection.module,
          let matrix = LoRATensors.Matrix(rawValue: parts[7]) else { return nil }
    return (LoRATensorKey(layer: layer, projection: projection), matrix)
}

/// `adapter_config.json` as PEFT writes it; only the fields that change the math are read.
struct AdapterConfig: Decodable {
    var peft_type: String?
    var r: Int
    var lora_alpha: Double
    var use_rslora: Bool?
    var use_dora: Bool?
    var target_modules: TargetModules
    var modules_to_save: [String]?
    var bias: String?
    var fan_in_fan_out: Bool?
    var rank_pattern: [String: Int]?
    var alpha_pattern: [String: Double]?
    var layers_to_transform: [Int]?
    var layer_replication: [[Int]]?

    /// `target_modules` is a list of module names, or a string PEFT treats as a regular expression.
    enum TargetModules: Decodable {
        case names([String])
        case pattern(String)

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let names = try? container.decode([String].self) {
                self = .names(names)
            } else {
                self = .pattern(try container.decode(String.self))
            }
        }
    }

    /// The targeted projections, after refusing every feature whose math this engine does not implement.
    func validatedTargets(path: String) throws -> Set<Projection> {
        if let peft_type, peft_type != "LORA" {
            throw ModelError.unsupported(path: path, field: "peft_type", value: "\"\(peft_type)\"", supported: "LORA")
        }
        guard r > 0 else { throw ModelError.invalidValue(path: path, field: "r", reason: "must be positive, found \(r)") }
        func refuse(_ field: String, _ value: String, _ supported: String) -> ModelError {
            .unsupported(path: path, field: field, value: value, supported: supported)
        }
        if use_dora == true { throw refuse("use_dora", "true (DoRA)", "false") }
        if let modules_to_save, !modules_to_save.isEmpty {
            throw refuse("modules_to_save", "\(modules_to_save)", "none: fully fine-tuned modules cannot be batched")
        }
        if let bias, bias != "none" { throw refuse("bias", "\"\(bias)\"", "\"none\"") }
        if fan_in_fan_out == true { throw refuse("fan_in_fan_out", "true", "false") }
        if let rank_pattern, !rank_pattern.isEmpty { throw refuse("rank_pattern", "\(rank_pattern)", "{} (one rank for every module)") }
        if let alpha_pattern, !alpha_pattern.isEmpty { throw refuse("alpha_pattern", "\(alpha_pattern)", "{} (one alpha for every module)") }
        if let layers = layers_to_transform { throw refuse("layers_to_transform", "\(layers)", "null (every layer)") }
        if let replication = layer_replication { throw refuse("layer_replication", "\(replication)", "null") }

        let supported = Projection.allCases.map(\.rawValue).joined(separator: ", ")
        switch target_modules {
        case let .pattern(pattern):
            throw refuse("target_modules", "\"\(pattern)\" (a regular expression)", "a list of: \(supported)")
        case let .names(names):
            return try Set(names.map { name in
                guard let projection = Projection(rawValue: name) else { throw refuse("target_modules", "\"\(name)\"", supported) }
                return projection
            })
        }
    }
}
