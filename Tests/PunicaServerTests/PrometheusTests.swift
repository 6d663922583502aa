import PunicaEngine
@testable import PunicaServer
import Testing

/// An exposition read as Prometheus' text parser (and so the inference gateway's metrics extractor) reads it: each
/// family's `# TYPE` before its samples, its samples together, label values unescaped.
struct Exposition {
    struct Sample {
        let name: String
        let labels: [String: String]
        let value: Double
    }

    struct Malformed: Error, CustomStringConvertible {
        let description: String
    }

    private(set) var types: [String: String] = [:]
    private(set) var samples: [Sample] = []

    init(_ text: String) throws {
        var finished: Set<String> = []
        var current: String?
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# TYPE ") {
                let fields = line.split(separator: " ").map(String.init)
                guard fields.count == 4, types[fields[2]] == nil else { throw Malformed(description: "bad or second TYPE line: \(line)") }
                types[fields[2]] = fields[3]
                continue
            }
            if line.hasPrefix("#") { continue }
            let sample = try Self.sample(line)
            let family = types.keys.filter { sample.name == $0 || (types[$0] == "histogram" && sample.name.hasPrefix($0 + "_")) }
                .max { $0.count < $1.count }
            guard let family else { throw Malformed(description: "sample before its TYPE line: \(line)") }
            if family != current {
                guard !finished.contains(family) else { throw Malformed(description: "samples of \(family) not together") }
                if let current { finished.insert(current) }
                current = family
            }
            samples.append(sample)
        }
    }

    func samples(_ name: String) -> [Sample] { samples.filter { $0.name == name } }

    /// `name{labels} value`, label values in double quotes with \\, \" and \n escaped.
    private static func sample(_ line: String) throws -> Sample {
        var rest = Substring(line)
        let name = String(rest.prefix { $0 != "{" && $0 != " " })
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let key = String(rest.prefix { $0 != "=" })
                rest = rest.dropFirst(key.count)
                guard rest.hasPrefix("=\"") else { throw Malformed(description: "label \(key) without a quoted value: \(line)") }
                rest = rest.dropFirst(2)
                var value = ""
                while let character = rest.popFirst(), character != "\"" {
                    if character == "\\", let escaped = rest.popFirst() { value.append(escaped == "n" ? "\n" : escaped) } else { value.append(character) }
                }
                labels[key] = value
                if rest.first == "," { rest = rest.dropFirst() }
                guard !rest.isEmpty else { throw Malformed(description: "unterminated labels: \(line)") }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " ", let value = Double(rest.dropFirst()) else { throw Malformed(description: "bad value: \(line)") }
        return Sample(name: name, labels: labels, value: value)
    }
}

@Suite struct PrometheusTests {
    static func stats(running: Set<String> = [], waiting: Set<String> = [], residency: [String: AdapterResidency.State] = [:]) -> EngineStats {
        EngineStats(running: 3, waiting: 1, kvPagesUsed: 25, kvPagesTotal: 100, pageSize: 16, kvCacheDType: .bfloat16, adapterSlots: 4, requestsPerAdapter: ["": 1],
                    runningAdapters: running, waitingAdapters: waiting, adapterStates: residency,
                    generatedTokensPerSecond: 0, steps: 0, lastStepSequences: 0, lastStepTokens: 0)
    }

    @Test func modelServerProtocolHasVLLMNamesLabelsAndMeanings() async throws {
        let metrics = ServerMetrics()
        let text = await metrics.exposition(stats: Self.stats(running: ["python", "gone"], waiting: ["scripture"]),
                                            adapters: ["python", "scripture"], baseModel: "base", now: 1_700_000_000.5)
        let exposition = try Exposition(text)
        for name in ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
                     "vllm:cache_config_info", "vllm:lora_requests_info"] {
            #expect(exposition.types[name] == "gauge", "\(name)")  // the extractor reads values of gauges and counters only
            #expect(exposition.samples(name).count == 1, "\(name)")
        }
        func value(_ name: String) -> Double? { exposition.samples(name).first?.value }
        #expect(value("vllm:num_requests_running") == 3 && value("vllm:num_requests_waiting") == 1)
        #expect(value("vllm:kv_cache_usage_perc") == 0.25 && value("vllm:gpu_cache_usage_perc") == 0.25)
        #expect(exposition.samples("vllm:num_requests_running").first?.labels == ["model_name": "base"])
        #expect(exposition.samples("vllm:cache_config_info").first?.labels == ["block_size": "16", "cache_dtype": "bfloat16", "num_gpu_blocks": "100"])
        let lora = try #require(exposition.samples("vllm:lora_requests_info").first)
        // An adapter unregistered since the snapshot ("gone") is not listed.
        #expect(lora.labels == ["max_lora": "4", "running_lora_adapters": "python", "waiting_lora_adapters": "scripture"])
        #expect(lora.value == 1_700_000_000.5)
    }

    @Test func changedAdapterListsReplaceTheirSeries() async throws {
        let metrics = ServerMetrics()
        _ = await metrics.exposition(stats: Self.stats(running: ["python"]), adapters: ["python"], baseModel: "base", now: 1)
        let later = try Exposition(await metrics.exposition(stats: Self.stats(), adapters: ["python"], baseModel: "base", now: 2))
        let lora = later.samples("vllm:lora_requests_info")
        #expect(lora.count == 1 && lora[0].labels["running_lora_adapters"] == "" && lora[0].value == 2)
    }

    @Test func residencyIsOneStatePerRegisteredAdapter() async throws {
        let metrics = ServerMetrics()
        let adapters = ["a", "b", "c", "d"]
        let text = await metrics.exposition(stats: Self.stats(residency: ["b": .loading, "c": .onHost, "d": .resident(slot: 2)]), adapters: adapters, baseModel: "base")
        let samples = try Exposition(text).samples("punica_adapter_residency")
        #expect(samples.count == adapters.count * ResidencyState.allCases.count)
        let current = Dictionary(uniqueKeysWithValues: samples.filter { $0.value == 1 }.map { ($0.labels["adapter"]!, $0.labels["state"]!) })
        #expect(current == ["a": "disk", "b": "loading", "c": "host", "d": "slot"])
    }

    @Test func histogramBucketsAreCumulativeWithInfSumAndCount() async throws {
        let metrics = ServerMetrics()
        for seconds in [0.0005, 0.001, 0.3, 100] { await metrics.firstToken(after: seconds) }
        let samples = try Exposition(await metrics.exposition(stats: Self.stats(), adapters: [], baseModel: "base"))
        let buckets = Dictionary(uniqueKeysWithValues: samples.samples("punica_time_to_first_token_seconds_bucket").map { ($0.labels["le"]!, $0.value) })
        #expect(buckets["0.001"] == 2 && buckets["0.25"] == 2 && buckets["0.5"] == 3 && buckets["80.0"] == 3 && buckets["+Inf"] == 4)
        #expect(samples.samples("punica_time_to_first_token_seconds_count").first?.value == 4)
        #expect(abs(try #require(samples.samples("punica_time_to_first_token_seconds_sum").first).value - 100.3015) < 1e-9)
    }

    @Test func sharedPromptTokensAreTheEnginesTotal() async throws {
        let metrics = ServerMetrics()
        var stats = Self.stats()
        for total in [40, 100] {
            stats.sharedPromptTokens = total
            let samples = try Exposition(await metrics.exposition(stats: stats, adapters: [], baseModel: "base"))
            #expect(samples.types["punica_prompt_tokens_shared_total"] == "counter")
            #expect(samples.samples("punica_prompt_tokens_shared_total").map(\.value) == [Double(total)])
        }
    }

    @Test func labelValuesAreEscaped() async throws {
        let name = "a\"b\\c\nd"
        let text = await ServerMetrics().exposition(stats: Self.stats(), adapters: [name], baseModel: "base")
        #expect(text.contains(#"punica_adapter_requests{model="a\"b\\c\nd"} 0.0"#))
        #expect(try Exposition(text).samples("punica_adapter_requests").contains { $0.labels["model"] == name })
    }
}
