#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import PunicaEngine
import ServiceLifecycle
import UnixSignals

/// What `punica serve` was told, beyond the engine.
public struct ServerConfiguration: Sendable {
    /// The `model` that selects the base model (any other `model` names an adapter).
    public var servedModelName: String
    /// The base model's directory, its `root` in /v1/models.
    public var modelDirectory: String
    /// Adapters registered at start, name → directory (their `root` in /v1/models).
    public var adapterDirectories: [String: String] = [:]
    /// Required as `Authorization: Bearer <key>` on /v1 routes when set.
    public var apiKey: String?
    /// Directories /v1/load_lora_adapter may load from; none disables loading at run time.
    public var adapterRoots: [String] = []
    /// Whether a request for an unknown `model` registers `<adapter root>/<model>` first, when there is one.
    public var resolvesAdaptersFromRoots = false
    public var maxBodyBytes = 1 << 20
    /// The most tokens one request may ask to generate.
    public var maxTokensLimit = 4096
    /// Timeouts and buffers of each connection, and the shutdown deadline.
    public var limits = HTTPLimits()

    public init(servedModelName: String, modelDirectory: String) {
        self.servedModelName = servedModelName
        self.modelDirectory = modelDirectory
    }
}

public enum ServerSetupError: Error, CustomStringConvertible {
    case adapterRootNotFound(String)
    case cannotListen(host: String, port: Int, reason: String)

    public var description: String {
        switch self {
        case let .adapterRootNotFound(path): "--adapter-root \(path): no such directory"
        case let .cannotListen(host, port, reason): "--host \(host) --port \(port): cannot listen there (\(reason))"
        }
    }
}

/// The OpenAI-compatible HTTP API over a `GenerationService`: routes, their errors, metrics and shutdown.
public struct OpenAIServer: Sendable {
    let service: any GenerationService
    let configuration: ServerConfiguration
    let logger: Logger
    let metrics = ServerMetrics()
    /// `bos_token`, `eos_token`… as tokenizer_config.json names them, else (BOS, EOS) the texts of the ids found
    /// elsewhere: the chat template's variables and /tokenizer_info's fields.
    let specialTokens: [String: String]
    /// Parsed once: a model without a usable template still serves completions; chat requests get the error.
    let chatTemplate: Result<ChatTemplate, ChatTemplateError>
    let adapterRoots: AdapterRoots
    let adapterDirectories: AdapterDirectories
    let connections = Connections()

    public init(service: any GenerationService, configuration: ServerConfiguration, logger: Logger) throws(ServerSetupError) {
        self.service = service
        self.configuration = configuration
        self.logger = logger
        let tokenizer = service.tokenizer
        let tokens = TokenText(tokenizer: tokenizer)
        var specialTokens = tokenizer.specialTokenTexts
        if specialTokens["bos_token"] == nil { specialTokens["bos_token"] = tokenizer.bosTokenID.map(tokens.text) }
        if specialTokens["eos_token"] == nil { specialTokens["eos_token"] = tokenizer.eosTokenIDs.first.map(tokens.text) }
        self.specialTokens = specialTokens
        chatTemplate = Result { () throws(ChatTemplateError) in
            try ChatTemplate(templates: tokenizer.chatTemplates, source: tokenizer.chatTemplateSource, specialTokens: specialTokens)
        }
        adapterRoots = try AdapterRoots(configuration.adapterRoots)
        adapterDirectories = AdapterDirectories(configuration.adapterDirectories)
    }

    /// Where the chat template comes from, or why chat requests are refused.
    public var chatTemplateSummary: String {
        switch chatTemplate {
        case let .success(template): template.source
        case let .failure(error): "none usable (\(error))"
        }
    }

    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: LogRequestsMiddleware(.info))
        router.add(middleware: OpenAIErrorMiddleware())
        router.get("health") { _, _ in HTTPResponse.Status.ok }
        router.get("metrics") { _, _ in
            let text = await metrics.exposition(stats: service.stats(), adapters: service.adapterNames(), baseModel: configuration.servedModelName,
                                                connectionsClosed: connections.closedCounts)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        let api = router.group("v1")
        if let key = configuration.apiKey { api.add(middleware: APIKeyMiddleware(key: key)) }
        api.post("completions") { request, _ in try await serve(request, prepare: prepareCompletion) }
        api.post("chat/completions") { request, _ in try await serve(request, prepare: prepareChat) }
        api.get("models") { _, _ in await listModels() }
        api.post("load_lora_adapter") { request, _ in try await loadAdapter(request) }
        api.post("unload_lora_adapter") { request, _ in try await unloadAdapter(request) }
        // vLLM's tokenizer routes sit outside /v1; the API key guards them too.
        let tokenizer = router.group()
        if let key = configuration.apiKey { tokenizer.add(middleware: APIKeyMiddleware(key: key)) }
        tokenizer.post("tokenize") { request, _ in try await tokenize(request) }
        tokenizer.post("detokenize") { request, _ in try await detokenize(request) }
        tokenizer.get("tokenizer_info") { _, _ in tokenizerInfo() }
        return router
    }

    /// Checks that every `--adapter-root` is a directory (as `init` does), before the model loads.
    public static func checkAdapterRoots(_ paths: [String]) throws(ServerSetupError) {
        _ = try AdapterRoots(paths)
    }

    /// Checks that `host:port` can be listened on (free, and an address of this machine), by binding it and letting
    /// go: run it before the slow part of starting (loading the model), so that a busy port fails at once.
    public static func checkCanListen(host: String, port: Int) async throws(ServerSetupError) {
        do {
            let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port).get()
            try await channel.close()
        } catch let error as IOError {
            throw .cannotListen(host: host, port: port, reason: String(cString: strerror(error.errnoCode)))
        } catch {
            throw .cannotListen(host: host, port: port, reason: "\(error)")
        }
    }

    /// Serves on `host:port` until SIGINT or SIGTERM; then stops accepting connections and lets in-flight requests
    /// and streams finish for at most `limits.shutdownTimeout`, closes the connections still open (their requests
    /// are cancelled), and drains the engine. A second signal exits at once.
    public func run(host: String, port: Int) async throws {
        let limits = configuration.limits
        let http1 = HTTP1Channel.Configuration(additionalChannelHandlers: [ConnectionGuard(limits: limits, connections: connections)])
        let app = Application(router: makeRouter(), server: .http1(configuration: http1),
                              configuration: .init(address: .hostname(host, port: port), serverName: "punica"), logger: logger)
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask { await shutDownOnSignals(group) }
            try await tasks.next()
            tasks.cancelAll()
        }
        await service.drain()
        logger.info("drained; exiting")
    }

    /// The first SIGTERM or SIGINT starts a graceful shutdown with its deadline; the second exits at once.
    private func shutDownOnSignals(_ group: ServiceGroup) async {
        let timeout = configuration.limits.shutdownTimeout
        await withTaskGroup(of: Void.self) { deadline in
            var stopping = false
            for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                guard !stopping else {
                    logger.warning("\(signal) again: exiting now")
                    exit(128 + signal.rawValue)
                }
                stopping = true
                logger.notice("\(signal): no new connections; requests in flight have \(timeout.secondsText) to finish (a second signal exits now)")
                await group.triggerGracefulShutdown()
                deadline.addTask { [connections, logger] in
                    guard (try? await Task.sleep(for: timeout)) != nil else { return }
                    logger.warning("shutdown deadline: closing \(connections.closeAll()) connection(s) still open")
                }
            }
            deadline.cancelAll()
        }
    }

    /// The body as `T`: at most `maxBodyBytes`, JSON.
    func decodeBody<T: Decodable>(_ type: T.Type, from request: inout Request) async throws -> T {
        try JSONDecoder().decode(T.self, from: try await bodyData(from: &request))
    }

    /// The request's body, up to `--max-body-bytes`.
    func bodyData(from request: inout Request) async throws -> Data {
        do {
            return Data(try await request.collectBody(upTo: configuration.maxBodyBytes).readableBytesView)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError.bodyTooLarge(limit: configuration.maxBodyBytes)
        }
    }
}
