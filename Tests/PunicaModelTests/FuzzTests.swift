import Foundation
import PunicaCompute
import PunicaModel
import Testing
import TestSupport

/// Seeded mutation fuzzing of the model loaders, in memory: every mutated safetensors file, config.json and adapter
/// either loads or is refused with a `ModelError`; none traps (a trap would end the test process) and no other
/// error type leaks out. The counts check that the mutations reach both outcomes.
@Suite struct FuzzTests {
    static let cases = Mutator.cases

    /// Runs `cases` mutated inputs through `load`; returns how many loaded and how many were refused.
    func fuzz(seed: UInt64, _ load: (inout Mutator) throws -> Void) -> (loaded: Int, refused: Int) {
        var mutator = Mutator(seed: seed, dictionary: ["\"dtype\":\"F16\",", "\"shape\":[3,2],", "\"data_offsets\":[0,8]",
                                                       "\"sliding_window\":0,", "\"head_dim\":2305843009213693952,",
                                                       "\"r\":0,", "\"use_rslora\":true,", "\"lora_alpha\":1e39,"])
        var (loaded, refused) = (0, 0)
        for index in 0..<Self.cases {
            do {
                try load(&mutator)
                loaded += 1
            } catch is ModelError {
                refused += 1
            } catch {
                Issue.record("case \(index) (PUNICA_FUZZ_SEED=\(Mutator.seedOffset)) threw \(type(of: error)), not a ModelError: \(error)")
            }
        }
        return (loaded, refused)
    }

    /// A safetensors file: the length prefix, `header`, then the data bytes.
    static func safetensors(header: String, data: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) } + Array(header.utf8) + data
    }

    @Test func safetensorsHeaders() {
        let header = #"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"#
            + #""b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"BF16","shape":[2,1],"data_offsets":[32,36]},"#
            + #""empty":{"dtype":"F32","shape":[0,5],"data_offsets":[36,36]}}"#
        let data = (0..<36).map { UInt8($0 * 7 % 64) }
        let edges: [UInt64] = [0, 1, 7, 1 << 63, UInt64.max, UInt64(Int.max), 100_000_001]
        let result = fuzz(seed: 1) { mutator in
            var bytes: [UInt8]
            switch mutator.int(0..<10) {
            case 0..<7:  // the header text, its length prefix kept right
                let text = mutator.mutate(Array(header.utf8))
                bytes = withUnsafeBytes(of: UInt64(text.count).littleEndian) { Array($0) } + text + data
                if mutator.int(0..<4) == 0 { bytes.removeLast(mutator.int(0..<8)) }
            case 7:  // an edge header length
                bytes = Self.safetensors(header: header, data: data)
                withUnsafeBytes(of: edges[mutator.int(0..<edges.count)].littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
            default:  // any byte of the file
                bytes = mutator.mutate(Self.safetensors(header: header, data: data))
            }
            let file = try SafeTensorsFile(bytes: Data(bytes), path: "fuzz.safetensors")
            for name in file.tensorNames {
                let tensor = file.tensor(name)!
                _ = tensor.firstNonFinite()
                if tensor.elementCount > 0 { _ = tensor.value(at: tensor.elementCount - 1) }
            }
        }
        #expect(result.loaded > 50 && result.refused > 1000, "\(result)")
    }

    static let llamaConfig = #"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,"#
        + #""num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,"rms_norm_eps":1e-05,"#
        + #""rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"#
        + #""high_freq_factor":4.0,"original_max_position_embeddings":8192},"max_position_embeddings":2048,"#
        + #""hidden_act":"silu","tie_word_embeddings":true,"bos_token_id":1,"eos_token_id":[2,3]}"#
    static let mistralConfig = #"{"architectures":["MistralForCausalLM"],"hidden_size":64,"intermediate_size":128,"#
        + #""num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":32,"vocab_size":100,"#
        + #""rms_norm_eps":1e-06,"rope_theta":10000.0,"sliding_window":16,"max_position_embeddings":4096,"bos_token_id":1,"#
        + #""eos_token_id":2,"rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":10000.0}}"#

    @Test func configJSON() {
        let seeds = [Array(Self.llamaConfig.utf8), Array(Self.mistralConfig.utf8)]
        let result = fuzz(seed: 2) { mutator in
            let json = mutator.mutate(seeds[mutator.int(0..<2)])
            let config = try ModelConfig.parse(Data(json), path: "config.json")
            _ = config.parameterCount
        }
        #expect(result.loaded > 50 && result.refused > 1000, "\(result)")
    }

    @Test func adapters() throws {
        let config = ModelConfig.llama(hiddenSize: 8, intermediateSize: 16, layers: 2, heads: 2, kvHeads: 1, vocabularySize: 16,
                                       tieWordEmbeddings: false)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("punica-fuzz-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try LoRAAdapter.writeRandom(to: directory, config: config, rank: 2, alpha: 4, targets: [.q, .v, .down], seed: 3)
        let settings = try Array(Data(contentsOf: URL(fileURLWithPath: directory + "/adapter_config.json")))
        let weights = try Array(Data(contentsOf: URL(fileURLWithPath: directory + "/adapter_model.safetensors")))
        let headerEnd = 8 + Int(weights.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let poison: [Float] = [.nan, .infinity, -.infinity, 1e30, 70000, 65504, -3e4]
        let result = fuzz(seed: 4) { mutator in
            var (json, file) = (settings, weights)
            switch mutator.int(0..<10) {
            case 0..<4:
                json = mutator.mutate(settings)
            case 4..<8:  // the weights' header, its length prefix kept right
                let text = mutator.mutate(Array(weights[8..<headerEnd]))
                file = withUnsafeBytes(of: UInt64(text.count).littleEndian) { Array($0) } + text + weights[headerEnd...]
            default:  // a value in the data: NaN, ±∞, beyond or at float16's limit
                let element = mutator.int(0..<(weights.count - headerEnd) / 4)
                withUnsafeBytes(of: poison[mutator.int(0..<poison.count)]) {
                    file.replaceSubrange(headerEnd + 4 * element ..< headerEnd + 4 * element + 4, with: $0)
                }
            }
            try LoRAAdapter.validate(configJSON: Data(json), weights: SafeTensorsFile(bytes: Data(file), path: "adapter_model.safetensors"),
                                     directory: "adapter", config: config)
        }
        #expect(result.loaded > 50 && result.refused > 1000, "\(result)")
    }
}
