import Foundation
import Testing
import TestSupport

/// Runs the built `punica` executable as a user would.
func punica(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
    let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("punica")
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let output = Pipe(), error = Pipe()
    process.standardOutput = output
    process.standardError = error
    try process.run()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = error.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: errorData, as: UTF8.self))
}

@Suite struct GenerateCommandTests {
    let model = Fixtures.path("models/llama-gqa")

    var adapterArguments: [String] {
        ["alpha", "beta", "gamma"].flatMap { ["--adapter", "\($0)=\(model)/adapters/\($0)"] }
    }

    func writeRequests(_ lines: [String]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("requests-\(UUID().uuidString).jsonl").path
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    struct Line: Decodable {
        struct Logprob: Decodable { let id: Int; let logprob: Float }
        let id: String
        let token_ids: [Int]
        let text: String
        let logprobs: [[Logprob]]?
        let finish_reason: String
    }

    /// A JSONL file mixing base-only and adapter requests runs as one batch and reproduces HF's greedy tokens,
    /// one output line per request in input order: the whole model, the model split over two CPU ranks, and the whole
    /// model with its KV cache in bfloat16 (the fixture's top-token margins are wider than that rounding).
    @Test(arguments: [(1, "auto"), (2, "auto"), (1, "bfloat16")])
    func requestsFileReproducesHFGreedyInOrder(tensorParallelSize: Int, kvCacheDtype: String) throws {
        let reference = try HFReference.load("llama-gqa")
        let lines = reference.cases.enumerated().map { index, testCase in
            let adapter = testCase.adapter.map { ", \"adapter\": \"\($0)\"" } ?? ""
            return "{\"id\": \"case\(index)\", \"prompt_ids\": \(reference.prompts[testCase.prompt_index])\(adapter), "
                + "\"max_tokens\": \(testCase.greedy.count), \"temperature\": 0, \"logprobs\": 2, \"ignore_eos\": true}"
        }
        let run = try punica(["generate", "--model", model, "--tensor-parallel-size", String(tensorParallelSize), "--kv-cache-dtype", kvCacheDtype]
                             + adapterArguments
                             + ["--requests", try writeRequests(lines)])
        #expect(run.status == 0, "\(run.error)")
        let results = try run.output.split(separator: "\n").map { try JSONDecoder().decode(Line.self, from: Data($0.utf8)) }
        #expect(results.map(\.id) == reference.cases.indices.map { "case\($0)" })
        for (result, testCase) in zip(results, reference.cases) {
            #expect(result.token_ids == testCase.greedy, "\(result.id)")
            #expect(result.finish_reason == "length")
            #expect(result.logprobs?.count == testCase.greedy.count && result.logprobs?.first?.first?.id == testCase.greedy.first)
        }
    }

    @Test func aKVCacheTypeTheBackendCannotKeepIsRefusedByName() throws {
        let unknown = try punica(["generate", "--model", model, "--kv-cache-dtype", "float8", "--prompt", "hi"])
        #expect(unknown.status != 0 && unknown.error.contains("--kv-cache-dtype float8: expected auto, float32 or bfloat16"), "\(unknown.error)")
        let cuda = try punica(["generate", "--model", model, "--device", "cuda", "--kv-cache-dtype", "bfloat16", "--prompt", "hi"])
        #expect(cuda.status != 0 && cuda.error.contains("on cuda the KV cache takes --dtype"), "\(cuda.error)")
    }

    @Test func aTensorParallelSizeTheModelCannotSplitIsRefusedByName() throws {
        let run = try punica(["generate", "--model", model, "--tensor-parallel-size", "3", "--prompt", "hi"])
        #expect(run.status != 0)
        #expect(run.error.contains("llama-gqa/config.json: num_attention_heads is 4, which a tensor parallel size of 3 cannot split"), "\(run.error)")
    }

    @Test func textPromptWithAnAdapterStreamsTextThatStopsAtTheStopString() throws {
        let first = try punica(["generate", "--model", model] + adapterArguments
                               + ["--prompt", "def main():", "--use-adapter", "beta", "--temperature", "0", "--max-tokens", "8"])
        #expect(first.status == 0, "\(first.error)")
        let line = try JSONDecoder().decode(Line.self, from: Data(first.output.utf8))
        #expect(line.token_ids.count == 8 && !line.text.isEmpty)
        // Stopping at a piece of the text just generated cuts the text before it.
        let stop = String(line.text.dropFirst(2).prefix(2))
        let stopped = try punica(["generate", "--model", model] + adapterArguments
                                 + ["--prompt", "def main():", "--use-adapter", "beta", "--temperature", "0", "--max-tokens", "8", "--stop", stop])
        let cut = try JSONDecoder().decode(Line.self, from: Data(stopped.output.utf8))
        #expect(cut.finish_reason == "stop" && line.text.hasPrefix(cut.text) && !cut.text.contains(stop))
    }

    @Test func unknownAdapterNamesTheRequestAndTheRegisteredAdapters() throws {
        let run = try punica(["generate", "--model", model] + adapterArguments
                             + ["--requests", try writeRequests(["{\"id\": \"r1\", \"prompt_ids\": [5, 6], \"adapter\": \"zeta\"}"])])
        #expect(run.status != 0)
        #expect(run.error.contains("r1") && run.error.contains("zeta") && run.error.contains("alpha, beta, gamma"))
    }

    @Test func malformedLineNamesFileAndLine() throws {
        let path = try writeRequests(["{\"prompt_ids\": [5]}", "{\"prompt_ids\": [5], \"top_p\": 3}"])
        let run = try punica(["generate", "--model", model, "--requests", path])
        #expect(run.status != 0 && run.error.contains("\(path):2") && run.error.contains("top_p"))
    }

    @Test func outOfVocabularyPromptIsRefused() throws {
        let run = try punica(["generate", "--model", model, "--requests", try writeRequests(["{\"id\": \"x\", \"prompt_ids\": [9999]}"])])
        #expect(run.status != 0 && run.error.contains("0..<768"))
    }
}
