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
        adapter's), GET /v1/models, POST /v1/load_lora_adapter {"lora_name", "lora_path"} and \
        /v1/unload_lora_adapter {"lora_name"}, GET /health, GET /metrics (Prometheus). SIGINT or SIGTERM stops \
        accepting connections, lets running requests finish, then exits.
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 8000
    @Option(help: "The `model` that selects the base model (default: the model directory's name).") var servedModelName: String?
    @Option(help: "Require `Authorization: Bearer KEY` on /v1 routes (default: $PUNICA_API_KEY; unset: no key).") var apiKey: String?
    @Option(help: "A directory /v1/load_lora_adapter may load from (repeatable; none: loading at run time is off).") var adapterRoot: [String] = []
    @Option(help: "Largest request body, in bytes.") var maxBodyBytes = 1 << 20
    @Option(help: "Most tokens one request may generate.") var maxTokensLimit = 4096
    @Option(help: "Requests in the running batch at once.") var maxRunningRequests = EngineConfiguration().maxRunningRequests
    @Option(help: "Requests queued beyond the running batch before new ones are refused with 429.")
    var maxWaitingRequests = EngineConfiguration().maxWaitingRequests
    @Option(help: "KV-cache size in tokens, shared by all running requests (default: what --gpu-memory-utilization leaves on a GPU, \(EngineConfiguration.hostKVCacheTokens) on the CPU).")
    var kvCacheTokens: Int?
    @Option(help: "Share of the GPU's memory for weights, steps, adapters and the KV cache together.")
    var gpuMemoryUtilization = EngineConfiguration().gpuMemoryUtilization
    @Option(help: "LoRA rank the GPU memory sizing reserves room for, per loaded adapter (higher ranks still load).")
    var maxLoraRank = EngineConfiguration().maxLoRARank
    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.") var logLevel = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level \(logLevel): expected one of \(Logger.Level.allCases.map(\.rawValue))") }
    }

    func run() async throws {
        var logger = Logger(label: "punica.serve")
        logger.logLevel = Logger.Level(rawValue: logLevel)!

        let (model, tokenizer, adapters) = try modelOptions.load()
        var engineConfiguration = EngineConfiguration()
        engineConfiguration.maxRunningRequests = maxRunningRequests
        engineConfiguration.maxWaitingRequests = maxWaitingRequests
        engineConfiguration.kvCacheTokens = kvCacheTokens
        engineConfiguration.gpuMemoryUtilization = gpuMemoryUtilization
        engineConfiguration.maxLoRARank = maxLoraRank
        let engine = try Engine(model: model, tokenizer: tokenizer, configuration: engineConfiguration)
        logger.info("\(engine.kvCacheSummary)")
        for (name, directory) in adapters { try await engine.registerAdapter(name: name, directory: directory) }

        var configuration = ServerConfiguration(servedModelName: servedModelName ?? URL(fileURLWithPath: modelOptions.model).standardized.lastPathComponent,
                                                modelDirectory: modelOptions.model)
        configuration.adapterDirectories = Dictionary(adapters.map { ($0.name, $0.directory) }) { first, _ in first }
        configuration.apiKey = apiKey ?? ProcessInfo.processInfo.environment["PUNICA_API_KEY"]
        configuration.adapterRoots = adapterRoot
        configuration.maxBodyBytes = maxBodyBytes
        configuration.maxTokensLimit = maxTokensLimit
        let server: OpenAIServer
        do {
            server = try OpenAIServer(service: engine, configuration: configuration, logger: logger)
        } catch {
            throw ValidationError(error.description)
        }
        logger.info("model \(configuration.servedModelName) with adapters \(engine.adapterNames()); chat template: \(server.chatTemplateSummary)")
        try await server.run(host: host, port: port)
    }
}
