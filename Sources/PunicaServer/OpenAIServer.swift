#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import Logging
import PunicaEngine

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
    public var maxBodyBytes = 1 << 20
    /// The most tokens one request may ask to generate.
    public var maxTokensLimit = 4096

    public init(servedModelName: String, modelDirectory: String) {
        self.servedModelName = servedModelName
        self.modelDirectory = modelDirectory
    }
}

public enum ServerSetupError: Error, CustomStringConvertible {
    case adapterRootNotFound(String)

    public var description: String {
        switch self {
        case let .adapterRootNotFound(path): "--adapter-root \(path): no such directory"
        }
    }
}

/// The OpenAI-compatible HTTP API over a `GenerationService`: routes, their errors, metrics and shutdown.
public struct OpenAIServer: Sendable {
    let service: any GenerationService
    let configuration: ServerConfiguration
    let logger: Logger
    let metrics = ServerMetrics()
    /// Recognized once: a model whose template is not supported still serves completions; chat requests get the error.
    let chatTemplate: Result<ChatTemplate, ChatTemplateError>
    let adapterRoots: AdapterRoots
    let adapterDirectories: AdapterDirectories

    public init(service: any GenerationService, configuration: ServerConfiguration, logger: Logger) throws(ServerSetupError) {
        self.service = service
        self.configuration = configuration
        self.logger = logger
        let tokenizer = service.tokenizer
        let tokens = TokenText(tokenizer: tokenizer)
        chatTemplate = Result { () throws(ChatTemplateError) in
            try ChatTemplate(template: tokenizer.chatTemplate, bosToken: tokenizer.bosTokenID.map(tokens.text) ?? "",
                             eosToken: tokenizer.eosTokenIDs.first.map(tokens.text) ?? "")
        }
        adapterRoots = try AdapterRoots(configuration.adapterRoots)
        adapterDirectories = AdapterDirectories(configuration.adapterDirectories)
    }

    /// The chat template's family, or why chat requests are refused.
    public var chatTemplateSummary: String {
        switch chatTemplate {
        case let .success(template): template.family.rawValue
        case let .failure(error): "none usable (\(error))"
        }
    }

    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: LogRequestsMiddleware(.info))
        router.add(middleware: OpenAIErrorMiddleware())
        router.get("health") { _, _ in HTTPResponse.Status.ok }
        router.get("metrics") { _, _ in
            let text = await metrics.exposition(stats: service.stats(), adapters: service.adapterNames(), baseModel: configuration.servedModelName)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        let api = router.group("v1")
        if let key = configuration.apiKey { api.add(middleware: APIKeyMiddleware(key: key)) }
        api.post("completions") { request, _ in try await serve(request, prepare: prepareCompletion) }
        api.post("chat/completions") { request, _ in try await serve(request, prepare: prepareChat) }
        api.get("models") { _, _ in await listModels() }
        api.post("load_lora_adapter") { request, _ in try await loadAdapter(request) }
        api.post("unload_lora_adapter") { request, _ in try await unloadAdapter(request) }
        return router
    }

    /// Serves on `host:port` until SIGINT or SIGTERM; then stops accepting connections, lets in-flight requests and
    /// streams finish, and drains the engine.
    public func run(host: String, port: Int) async throws {
        let app = Application(router: makeRouter(), configuration: .init(address: .hostname(host, port: port), serverName: "punica"), logger: logger)
        try await app.runService()
        await service.drain()
        logger.info("drained; exiting")
    }

    /// The body as `T`: at most `maxBodyBytes`, JSON.
    func decodeBody<T: Decodable>(_ type: T.Type, from request: inout Request) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: configuration.maxBodyBytes)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError.bodyTooLarge(limit: configuration.maxBodyBytes)
        }
        return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
    }
}
