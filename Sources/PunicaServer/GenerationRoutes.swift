#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import Logging
import PunicaEngine

/// A validated generation request: what to submit, and how to present its tokens.
struct PreparedGeneration<Builder: ResponseBuilder> {
    let request: EngineRequest
    let builder: Builder
    let stream: Bool
}

/// How a generation ended.
struct GenerationEnd {
    let reason: FinishReason
    let usage: Usage
    let message: String?

    /// What to tell the client when the engine could not finish the request.
    var failure: APIError? { reason == .error ? .generationFailed(message ?? "no reason given") : nil }
}

extension OpenAIServer {
    /// `POST /v1/completions`
    func prepareCompletion(_ request: inout Request) async throws -> PreparedGeneration<CompletionBuilder> {
        let body = try await decodeBody(CompletionRequest.self, from: &request)
        let options = body.options
        let adapter = try adapter(for: options.model)
        let promptIDs = service.tokenizer.encode(try body.promptText())
        let maxTokens = try options.maxTokens(promptTokens: promptIDs.count, promptField: "prompt", defaultTokens: 16,
                                              limit: configuration.maxTokensLimit, context: service.maxContextLength)
        let logprobs = try body.logprobs.map { (count) throws(APIError) in try engineLogprobs(count, field: "logprobs") } ?? 0
        let sampling = try options.sampling(maxTokens: maxTokens, logprobs: logprobs)
        let identity = ResponseIdentity(id: "cmpl-\(Self.randomID())", created: unixTime(), model: options.model, includeUsage: options.includesUsage)
        return PreparedGeneration(request: EngineRequest(id: identity.id, promptIDs: promptIDs, adapter: adapter, sampling: sampling),
                                  builder: CompletionBuilder(identity: identity, topCount: body.logprobs, tokens: TokenText(tokenizer: service.tokenizer)),
                                  stream: options.streams)
    }

    /// `POST /v1/chat/completions`: the messages rendered by the model's chat template.
    func prepareChat(_ request: inout Request) async throws -> PreparedGeneration<ChatBuilder> {
        let data = try await bodyData(from: &request)
        let body = try JSONDecoder().decode(ChatCompletionRequest.self, from: data)
        let options = body.options
        let adapter = try adapter(for: options.model)
        let json: JinjaValue
        do { json = try OrderedJSON.parse(data) } catch { throw APIError.invalid(param: nil, message: "The request body is not valid JSON: \(error)") }
        let prompt = try chatTemplate.get().render(try body.templateInput(body: json))
        // The template writes special tokens (BOS) itself.
        let promptIDs = service.tokenizer.encode(prompt, addSpecialTokens: false)
        let maxTokens = try options.maxTokens(promptTokens: promptIDs.count, promptField: "messages", defaultTokens: nil,
                                              limit: configuration.maxTokensLimit, context: service.maxContextLength)
        let sampling = try options.sampling(maxTokens: maxTokens, logprobs: try body.logprobsCount())
        let identity = ResponseIdentity(id: "chatcmpl-\(Self.randomID())", created: unixTime(), model: options.model, includeUsage: options.includesUsage)
        let topCount = body.logprobs == true ? body.top_logprobs ?? 0 : nil
        return PreparedGeneration(request: EngineRequest(id: identity.id, promptIDs: promptIDs, adapter: adapter, sampling: sampling),
                                  builder: ChatBuilder(identity: identity, topCount: topCount, tokens: TokenText(tokenizer: service.tokenizer)),
                                  stream: options.streams)
    }

    /// The adapter `model` selects: nil for the base model's name.
    private func adapter(for model: String) throws(APIError) -> String? {
        if model == configuration.servedModelName { return nil }
        guard service.adapterNames().contains(model) else { throw .modelNotFound(model) }
        return model
    }

    private static func randomID() -> String { UUID().uuidString.lowercased().replacing("-", with: "") }

    /// Prepares and submits a request, then answers with server-sent events or one JSON object. A request refused on
    /// the way counts as rejected.
    func serve<Builder: ResponseBuilder>(_ request: Request, prepare: (inout Request) async throws -> PreparedGeneration<Builder>) async throws -> Response {
        let arrival = ContinuousClock.now
        var request = request
        let prepared: PreparedGeneration<Builder>
        let events: AsyncStream<GenerationEvent>
        do {
            prepared = try await prepare(&request)
            events = try service.submit(prepared.request)
        } catch {
            await metrics.rejected()
            throw error
        }
        let id = prepared.request.id
        let prompt = prepared.request.promptIDs.count
        let model = prepared.request.adapter ?? configuration.servedModelName
        logger.info("\(id): \(model), \(prepared.request.promptIDs.count) prompt tokens, max_tokens \(prepared.request.sampling.maxTokens)")
        let body = request.body
        guard prepared.stream else {
            var builder = prepared.builder
            let end = try await cancellingOnDisconnect(body, id: id) {
                try await consume(events, id: id, promptTokens: prompt, arrival: arrival, into: &builder) { _ in }
            }
            var response = end.failure?.response ?? jsonResponse(builder.whole(finishReason: end.reason.rawValue, usage: end.usage))
            response.headers[.connection] = "close"
            return response
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", .connection: "close"],
                        body: ResponseBody { writer in
            var builder = prepared.builder
            try await cancellingOnDisconnect(body, id: id) {
                for chunk in builder.openingChunks() { try await writer.write(serverSentEvent(chunk)) }
                let end = try await consume(events, id: id, promptTokens: prompt, arrival: arrival, into: &builder) { try await writer.write(serverSentEvent($0)) }
                // Headers are sent: a failure mid-stream is reported as an error event, as OpenAI-compatible servers do.
                let closing = end.failure.map { [serverSentEvent($0.body)] }
                    ?? builder.closingChunks(finishReason: end.reason.rawValue, usage: end.usage).map(serverSentEvent)
                for event in closing { try await writer.write(event) }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            }
            try await writer.finish(nil)
        })
    }

    /// Feeds the request's events to `builder`, handing each chunk to `emit`, and records its latencies and outcome.
    /// Every submitted request is counted once, by how it ended: when `emit` fails (the client went away, or stopped
    /// reading until the connection was closed) the request is cancelled and its `.finished` event still awaited.
    private func consume<Builder: ResponseBuilder>(
        _ events: AsyncStream<GenerationEvent>, id: String, promptTokens: Int, arrival: ContinuousClock.Instant, into builder: inout Builder,
        emit: (Builder.Chunk) async throws -> Void
    ) async throws -> GenerationEnd {
        var lastToken: ContinuousClock.Instant?
        var generated = 0
        var emitFailure: (any Error)?
        for await event in events {
            switch event {
            case let .token(token, text, logprob, top):
                let now = ContinuousClock.now
                if let lastToken {
                    await metrics.nextToken(after: (now - lastToken).seconds)
                } else {
                    await metrics.firstToken(after: (now - arrival).seconds)
                }
                lastToken = now
                generated += 1
                guard emitFailure == nil, let chunk = builder.append(text: text, token: token, logprob: logprob, top: top) else { continue }
                do {
                    try await emit(chunk)
                } catch {
                    emitFailure = error
                    service.cancel(id: id)
                }
            case let .finished(reason, usage, message):
                await metrics.finished(reason, usage: usage)
                let milliseconds = Int((ContinuousClock.now - arrival).seconds * 1000)
                logger.info("\(id): \(reason.rawValue) after \(usage.completionTokens) tokens in \(milliseconds) ms\(message.map { ": \($0)" } ?? "")")
                if let emitFailure { throw emitFailure }
                return GenerationEnd(reason: reason, usage: usage, message: message)
            }
        }
        // The stream ends without `.finished` only when this task is cancelled (the server is stopping): its
        // `.finished` will not be read here, so it is counted now.
        service.cancel(id: id)
        await metrics.finished(.cancelled, usage: Usage(promptTokens: promptTokens, completionTokens: generated))
        logger.info("\(id): cancelled with its connection after \(generated) tokens")
        throw emitFailure ?? CancellationError()
    }

    /// Runs `operation`, cancelling the engine request when the client's connection closes (noticed at once, even
    /// while the request waits for its first token) or when `operation` fails (a write to a closed connection).
    /// Watching for the close reads the connection to its end, so it cannot serve another request: responses say
    /// `Connection: close`, and clients open a new one.
    private func cancellingOnDisconnect<T: Sendable>(_ body: RequestBody, id: String, _ operation: () async throws -> T) async throws -> T {
        do {
            return try await body.consumeWithInboundCloseHandler({ _ in try await operation() },
                                                                 onInboundClosed: { [service] in service.cancel(id: id) })
        } catch {
            service.cancel(id: id)
            throw error
        }
    }
}

/// One server-sent event: `data: <json>` and a blank line.
func serverSentEvent(_ value: some Encodable) -> ByteBuffer {
    var buffer = ByteBuffer(string: "data: ")
    var json = jsonBuffer(value)
    buffer.writeBuffer(&json)
    buffer.writeString("\n\n")
    return buffer
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
