import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaEngine

/// `punica generate`: offline batch inference, one JSON line out per request (like vLLM's `LLM.generate`).
struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text for one prompt or a JSONL file of requests, all batched together.",
        discussion: """
        Each line of --requests is a JSON object: {"id", "prompt" | "prompt_ids", "adapter"?, "max_tokens", \
        "temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop", "stop_token_ids", "logprobs", \
        "ignore_eos"}. Output: one JSON line per request, in input order: \
        {"id", "token_ids", "text", "logprobs", "finish_reason"}.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var parallel: ParallelOptions

    @Option(help: "A single prompt (instead of --requests).")
    var prompt: String?

    @Option(help: "Adapter for --prompt (a name given with --adapter); the base model when omitted.")
    var useAdapter: String?

    @Option(help: "JSONL file with one request per line.")
    var requests: String?

    @Option(help: "Tokens to generate for --prompt.") var maxTokens = 64
    @Option(help: "Sampling temperature for --prompt (0: greedy).") var temperature: Float = 1
    @Option(help: "Nucleus sampling for --prompt.") var topP: Float = 1
    @Option(help: "Top-k sampling for --prompt (0: off).") var topK = 0
    @Option(help: "Random seed for --prompt.") var seed: UInt64?
    @Option(help: "Stop string for --prompt (repeatable).") var stop: [String] = []
    @Option(help: "Top log-probabilities to report per token for --prompt.") var logprobs = 0

    @Option(help: "Most tokens one forward step computes (chunked prefill budget).")
    var maxTokensPerStep = 512

    func validate() throws {
        guard (prompt == nil) != (requests == nil) else { throw ValidationError("give exactly one of --prompt or --requests") }
        if useAdapter != nil && prompt == nil { throw ValidationError("--use-adapter goes with --prompt") }
        try require(maxTokensPerStep > 0, "--max-tokens-per-step", "must be > 0", maxTokensPerStep)
        // The engine takes 0 (a prompt scored, nothing generated); generating nothing here would be a mistake.
        try require(maxTokens >= 1, "--max-tokens", "must be >= 1", maxTokens)
        if prompt != nil { try validateSampling(promptSampling) }
    }

    /// The sampling flags of --prompt.
    private var promptSampling: SamplingParameters {
        var sampling = SamplingParameters()
        sampling.maxTokens = maxTokens
        sampling.temperature = temperature
        sampling.topP = topP
        sampling.topK = topK
        sampling.seed = seed
        sampling.stopStrings = stop
        sampling.logprobs = logprobs
        return sampling
    }

    func run() async throws {
        let (model, tokenizer, adapters) = try modelOptions.load(tensorParallelSize: parallel.tensorParallelSize)
        var configuration = EngineConfiguration()
        configuration.maxTokensPerStep = maxTokensPerStep
        let engine = try Engine(model: model, tokenizer: tokenizer, configuration: configuration)
        for (name, directory) in adapters { try await engine.registerAdapter(name: name, directory: directory) }
        let batch: [EngineRequest]
        if let requests {
            batch = try RequestFile.read(path: requests, tokenizer: tokenizer)
        } else {
            batch = [EngineRequest(id: "0", promptIDs: tokenizer.encode(prompt ?? ""), adapter: useAdapter, sampling: promptSampling)]
        }
        let completions: [Completion]
        do {
            completions = try await engine.complete(batch)
        } catch {
            throw ValidationError(error.description)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for completion in completions {
            print(String(decoding: try encoder.encode(ResultLine(completion)), as: UTF8.self))
        }
    }
}

/// One output line. Field names are the documented interface: keep them stable.
struct ResultLine: Encodable {
    let id: String
    let token_ids: [Int]
    let text: String
    let logprobs: [[TokenLogprob]]?
    let finish_reason: FinishReason

    init(_ completion: Completion) {
        id = completion.id
        token_ids = completion.tokenIDs
        text = completion.text
        logprobs = completion.logprobs
        finish_reason = completion.finishReason
    }
}
