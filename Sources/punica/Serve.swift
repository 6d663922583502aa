import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import PunicaEngine
import PunicaServer

/// `punica serve`: the OpenAI-compatible HTTP server (like `vllm serve`); a request's `model` picks the adapter.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model and its adapters over an OpenAI-compatible HTTP API.",
        discussion: """
        POST /v1/completions and /v1/chat/completions (streaming or not; `model` is the base model's name or an \
        adapter's), GET /v1/models, POST /v1/load_lora_adapter {"lora_name", "lora_path", "base_model_name"?} and \
        /v1/unload_lora_adapter {"lora_name"}, GET /health, GET /metrics (Prometheus, with the vllm: metrics the \
        Kubernetes inference gateway routes by: docs/SCALE-OUT.md). SIGINT or SIGTERM stops \
        accepting connections and lets running requests finish for --shutdown-timeout seconds, then closes the \
        connections left and exits; a second signal exits at once. Every flag is checked, and the port bound once, \
        before the model loads.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var parallel: ParallelOptions

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 8000
    @Option(help: "The `model` that selects the base model (default: the model directory's name).") var servedModelName: String?
    @Option(help: "Require `Authorization: Bearer KEY` on /v1 routes (default: $PUNICA_API_KEY; unset: no key).") var apiKey: String?
    @Option(help: "A directory /v1/load_lora_adapter may load from (repeatable; none: loading at run time is off).") var adapterRoot: [String] = []
    @Flag(help: "Load a request's unknown `model` from <adapter root>/<model> on its first request (as vLLM's lora_filesystem_resolver).")
    var loraFilesystemResolver = false
    @Option(help: "Largest request body, in bytes.") var maxBodyBytes = 1 << 20
    @Option(help: "Most tokens one request may generate.") var maxTokensLimit = 4096
    @Option(help: "Requests in the running batch at once.") var maxRunningRequests = EngineConfiguration().maxRunningRequests
    @Option(help: "Tokens one step computes at most: prompt chunks plus decode rows (as vLLM's --max-num-batched-tokens).")
    var maxNumBatchedTokens = EngineConfiguration().maxTokensPerStep
    @Option(help: "Adapters a step can use at once, each with its weights on the device (as vLLM's --max-loras).")
    var maxLoras = EngineConfiguration().adapterSlots
    @Option(help: "Requests queued beyond the running batch before new ones are refused with 429.")
    var maxWaitingRequests = EngineConfiguration().maxWaitingRequests
    @Option(help: "KV-cache size in tokens, shared by all running requests (default: what --gpu-memory-utilization leaves on a GPU, \(EngineConfiguration.hostKVCacheTokens) on the CPU).")
    var kvCacheTokens: Int?
    @Option(help: "Share of the GPU's memory for weights, steps, adapters and the KV cache together.")
    var gpuMemoryUtilization = EngineConfiguration().gpuMemoryUtilization
    @Option(help: "LoRA rank the GPU memory sizing reserves room for, per adapter slot (higher ranks still load).")
    var maxLoraRank = EngineConfiguration().maxLoRARank
    @Option(help: "GiB of host memory for adapters already read and converted, so bringing one back to the device is one copy.")
    var adapterHostCacheGib = Double(EngineConfiguration().adapterHostCacheBytes) / Double(1 << 30)
    @Option(help: "Seconds a connection with no request in progress may stay silent.") var idleTimeout = seconds(HTTPLimits().idleTimeout)
    @Option(help: "Seconds from a request's first byte to the end of its headers (else 408, closed).") var headerTimeout = seconds(HTTPLimits().headerTimeout)
    @Option(help: "Seconds from a request's headers to the end of its body (else 408, closed).") var bodyTimeout = seconds(HTTPLimits().bodyTimeout)
    @Option(help: "Seconds a client may leave the send buffer full (not reading) before its connection is closed and its request cancelled.")
    var sendTimeout = seconds(HTTPLimits().sendTimeout)
    @Option(help: "Bytes each connection may hold unsent, in the kernel and again in the server.") var sendBufferBytes = HTTPLimits().sendBufferBytes
    @Option(help: "Seconds SIGTERM/SIGINT lets requests in flight finish before their connections are closed.")
    var shutdownTimeout = seconds(HTTPLimits().shutdownTimeout)
    @Flag(help: "Run every step eagerly: no decode steps recorded and replayed as CUDA graphs (as vLLM's --enforce-eager).")
    var enforceEager = false
    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.") var logLevel = "info"

    /// Every limit in range, before anything slow starts.
    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level \(logLevel): expected one of \(Logger.Level.allCases.map(\.rawValue))") }
        try require((1...65535).contains(port), "--port", "must be in 1...65535", port)
        try require(maxBodyBytes > 0, "--max-body-bytes", "must be > 0", maxBodyBytes)
        if loraFilesystemResolver && adapterRoot.isEmpty {
            throw ValidationError("--lora-filesystem-resolver: needs an --adapter-root to load adapters from")
        }
        try require(maxTokensLimit > 0, "--max-tokens-limit", "must be > 0", maxTokensLimit)
        try require(maxRunningRequests > 0, "--max-running-requests", "must be > 0", maxRunningRequests)
        try require(maxNumBatchedTokens >= maxRunningRequests, "--max-num-batched-tokens", "must be >= --max-running-requests (\(maxRunningRequests))",
                    maxNumBatchedTokens)
        try require(maxLoras > 0, "--max-loras", "must be > 0", maxLoras)
        try require(maxWaitingRequests >= 0, "--max-waiting-requests", "must be >= 0", maxWaitingRequests)
        try require(adapterHostCacheGib >= 0 && adapterHostCacheGib <= 1_048_576, "--adapter-host-cache-gib", "must be in 0...1048576", adapterHostCacheGib)
        let page = EngineConfiguration().pageSize
        if let kvCacheTokens {
            try require(kvCacheTokens >= page, "--kv-cache-tokens", "must be at least one KV page (\(page) tokens)", kvCacheTokens)
        }
        try require(gpuMemoryUtilization > 0 && gpuMemoryUtilization <= 1, "--gpu-memory-utilization", "must be in (0, 1]", gpuMemoryUtilization)
        try require(maxLoraRank > 0, "--max-lora-rank", "must be > 0", maxLoraRank)
        for (flag, value) in [("--idle-timeout", idleTimeout), ("--header-timeout", headerTimeout), ("--body-timeout", bodyTimeout),
                              ("--send-timeout", sendTimeout), ("--shutdown-timeout", shutdownTimeout)] {
            try require(value > 0 && value <= 86_400, flag, "must be > 0 and <= 86400 seconds", value)
        }
        try require(sendBufferBytes >= 1024, "--send-buffer-bytes", "must be >= 1024", sendBufferBytes)
    }

    var limits: HTTPLimits {
        var limits = HTTPLimits()
        limits.idleTimeout = .seconds(idleTimeout)
        limits.headerTimeout = .seconds(headerTimeout)
        limits.bodyTimeout = .seconds(bodyTimeout)
        limits.sendTimeout = .seconds(sendTimeout)
        limits.sendBufferBytes = sendBufferBytes
        limits.shutdownTimeout = .seconds(shutdownTimeout)
        return limits
    }

    func run() async throws {
        var logger = Logger(label: "punica.serve")
        logger.logLevel = Logger.Level(rawValue: logLevel)!

        do {
            // The cheap checks that need the file system or the network, before the model loads.
            try OpenAIServer.checkAdapterRoots(adapterRoot)
            try await OpenAIServer.checkCanListen(host: host, port: port)
        } catch {
            throw ValidationError(error.description)
        }
        let (model, tokenizer, adapters) = try modelOptions.load(tensorParallelSize: parallel.tensorParallelSize)
        var engineConfiguration = EngineConfiguration()
        engineConfiguration.maxRunningRequests = maxRunningRequests
        engineConfiguration.maxWaitingRequests = maxWaitingRequests
        engineConfiguration.maxTokensPerStep = maxNumBatchedTokens
        engineConfiguration.adapterSlots = maxLoras
        engineConfiguration.kvCacheTokens = kvCacheTokens
        engineConfiguration.gpuMemoryUtilization = gpuMemoryUtilization
        engineConfiguration.maxLoRARank = maxLoraRank
        engineConfiguration.adapterHostCacheBytes = Int(adapterHostCacheGib * Double(1 << 30))
        engineConfiguration.recordDecodeSteps = !enforceEager
        let engine = try Engine(model: model, tokenizer: tokenizer, configuration: engineConfiguration)
        logger.info("\(engine.kvCacheSummary)")
        for (name, directory) in adapters { try await engine.registerAdapter(name: name, directory: directory) }

        var configuration = ServerConfiguration(servedModelName: servedModelName ?? URL(fileURLWithPath: modelOptions.model).standardized.lastPathComponent,
                                                modelDirectory: modelOptions.model)
        configuration.adapterDirectories = Dictionary(adapters.map { ($0.name, $0.directory) }) { first, _ in first }
        configuration.apiKey = apiKey ?? ProcessInfo.processInfo.environment["PUNICA_API_KEY"]
        configuration.adapterRoots = adapterRoot
        configuration.resolvesAdaptersFromRoots = loraFilesystemResolver
        configuration.maxBodyBytes = maxBodyBytes
        configuration.maxTokensLimit = maxTokensLimit
        configuration.limits = limits
        let server: OpenAIServer
        do {
            server = try OpenAIServer(service: engine, configuration: configuration, logger: logger)
        } catch {
            throw ValidationError(error.description)
        }
        logger.info("model \(configuration.servedModelName)\(model.ranks.count > 1 ? " split over \(model.ranks.count) ranks (tensor parallel)" : "") with adapters \(engine.adapterNames()); chat template: \(server.chatTemplateSummary)")
        try await server.run(host: host, port: port)
    }
}

private func seconds(_ duration: Duration) -> Double { Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18 }
