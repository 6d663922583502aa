#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import Logging
import PunicaEngine

/// A validated generation request: its choices (each an engine request with its builder, submitted together), and
/// how to present them.
struct PreparedGeneration<Builder: ResponseBuilder> {
    let identity: ResponseIdentity
    let choices: [(request: EngineRequest, builder: Builder)]
    /// The usage's prompt tokens: each distinct prompt once, however many choices share it.
    let promptTokens: Int
    let stream: Bool
    /// Each run of `bestOf` consecutive choices (one prompt's) returns its `n` most likely (`best_of`); equal: all.
    let n: Int, bestOf: Int
}

extension SamplingParameters {
    /// The parameters of choice `index` of a prompt's `n`: a seeded request's choices draw from seeds seed + index,
    /// so they differ from each other and the whole response is reproducible.
    func sibling(_ index: Int) -> SamplingParameters {
        var sampling = self
        sampling.seed = seed.map { $0 &+ UInt64(index) }
        return sampling
    }
}

/// How a generation ended.
struct GenerationEnd {
    let reason: FinishReason
    let usage: Usage
    let message: String?
    /// The generated tokens' summed logprobs, where the engine reported them: what `best_of` ranks by.
    let logprob: Double

    /// What to tell the client when the engine could not finish the request.
    var failure: APIError? { reason == .error ? .generationFailed(message ?? "no reason given") : nil }
}

extension OpenAIServer {
    /// `POST /v1/completions`: each prompt of the list gets `n` choices.
    func prepareCompletion(_ request: inout Request) async throws -> PreparedGeneration<CompletionBuilder> {
        let body = try await decodeBody(CompletionRequest.self, from: &request)
        let options = body.options
        let adapter = try await adapter(for: options.model)
        let (n, bestOf) = try body.choicesPerPrompt()
        // Ranking by `best_of` needs each token's logprob.
        let logprobs = try body.logprobs.map { (count) throws(APIError) in try engineLogprobs(count, field: "logprobs") } ?? (bestOf > n ? 1 : 0)
        if let count = body.prompt_logprobs { _ = try engineLogprobs(count, field: "prompt_logprobs") }
        // Echoed logprobs and `prompt_logprobs` come from the same scoring of the prompt: the wider of the two.
        let promptLogprobs = [body.echo ? body.logprobs : nil, body.prompt_logprobs].compactMap { $0 }.max()
        let identity = ResponseIdentity(id: "cmpl-\(Self.randomID())", created: unixTime(), model: options.model, includeUsage: options.includesUsage)
        var choices: [(request: EngineRequest, builder: CompletionBuilder)] = []
        var promptTokens = 0
        for (index, prompt) in body.prompts.enumerated() {
            let field = body.prompts.count == 1 ? "prompt" : "prompt[\(index)]"
            // Token ids echo as their text, special tokens shown as the completion's are (`skip_special_tokens`).
            let (promptIDs, promptText) = switch prompt {
            case let .text(text): (service.tokenizer.encode(text), text)
            case let .tokens(ids): (ids, service.tokenizer.decode(ids, skipSpecialTokens: options.skip_special_tokens ?? true))
            }
            let maxTokens = try options.maxTokens(promptTokens: promptIDs.count, promptField: field, defaultTokens: 16,
                                                  limit: configuration.maxTokensLimit, context: service.maxContextLength)
            var sampling = try options.sampling(maxTokens: maxTokens, logprobs: logprobs)
            sampling.promptLogprobs = promptLogprobs
            promptTokens += promptIDs.count
            // The prompt's choices share its prefill, grouped under the first one's id.
            let group = bestOf > 1 ? engineID(identity, choice: choices.count) : nil
            for sibling in 0..<bestOf {
                let choice = choices.count
                let builder = CompletionBuilder(identity: identity, index: choice, topCount: body.logprobs,
                                                echo: body.echo ? (promptText, promptIDs) : nil, promptTopCount: body.prompt_logprobs,
                                                tokens: TokenText(tokenizer: service.tokenizer))
                choices.append((EngineRequest(id: engineID(identity, choice: choice), promptIDs: promptIDs, adapter: adapter,
                                              sampling: sampling.sibling(sibling), promptGroup: group), builder))
            }
        }
        return PreparedGeneration(identity: identity, choices: choices, promptTokens: promptTokens, stream: options.streams, n: n, bestOf: bestOf)
    }

    /// `POST /v1/chat/completions`: the messages rendered by the model's chat template.
    func prepareChat(_ request: inout Request) async throws -> PreparedGeneration<ChatBuilder> {
        let data = try await bodyData(from: &request)
        let body = try JSONDecoder().decode(ChatCompletionRequest.self, from: data)
        let options = body.options
        let adapter = try await adapter(for: options.model)
        let n = try options.choiceCount()
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
        let choices = (0..<n).map { choice in
            (request: EngineRequest(id: engineID(identity, choice: choice), promptIDs: promptIDs, adapter: adapter, sampling: sampling.sibling(choice),
                                    promptGroup: n > 1 ? identity.id : nil),
             builder: ChatBuilder(identity: identity, index: choice, topCount: topCount, tokens: TokenText(tokenizer: service.tokenizer)))
        }
        return PreparedGeneration(identity: identity, choices: choices, promptTokens: promptIDs.count, stream: options.streams, n: n, bestOf: n)
    }

    /// The engine request id of a choice: the response's id, suffixed by the choice's index beyond the first.
    private func engineID(_ identity: ResponseIdentity, choice: Int) -> String { choice == 0 ? identity.id : "\(identity.id)-\(choice)" }

    /// The adapter `model` selects: nil for the base model's name. An unknown name may be resolved from the adapter
    /// roots (`resolveAdapter`).
    private func adapter(for model: String) async throws -> String? {
        if model == configuration.servedModelName { return nil }
        if service.adapterNames().contains(model) { return model }
        guard try await resolveAdapter(model) else { throw APIError.modelNotFound(model) }
        return model
    }

    private static func randomID() -> String { UUID().uuidString.lowercased().replacing("-", with: "") }

    /// Prepares and submits a request's choices together (so they share batches), then answers with server-sent
    /// events or one JSON object. A request refused on the way counts as rejected; nothing of it runs.
    func serve<Builder: ResponseBuilder>(_ request: Request, prepare: (inout Request) async throws -> PreparedGeneration<Builder>) async throws -> Response {
        let arrival = ContinuousClock.now
        var request = request
        let prepared: PreparedGeneration<Builder>
        var submitted: [AsyncStream<GenerationEvent>] = []
        do {
            prepared = try await prepare(&request)
        } catch {
            await metrics.rejected()
            throw error
        }
        let requests = prepared.choices.map(\.request)
        do {
            for engineRequest in requests { submitted.append(try service.submit(engineRequest)) }
        } catch {
            requests.prefix(submitted.count).forEach { service.cancel(id: $0.id) }
            await metrics.rejected()
            throw error
        }
        let events = submitted, ids = requests.map(\.id)
        for engineRequest in requests {
            let model = engineRequest.adapter ?? configuration.servedModelName
            logger.info("\(engineRequest.id): \(model), \(engineRequest.promptIDs.count) prompt tokens, max_tokens \(engineRequest.sampling.maxTokens)")
        }
        let identity = prepared.identity
        let promptTokens = prepared.promptTokens
        @Sendable func usage(_ ends: [GenerationEnd]) -> Usage {
            Usage(promptTokens: promptTokens, completionTokens: ends.reduce(0) { $0 + $1.usage.completionTokens })
        }
        let body = request.body
        guard prepared.stream else {
            var builders = prepared.choices.map(\.builder)
            // The choices run together in the engine; reading them one after the other only orders the reading.
            let ends = try await cancellingOnDisconnect(body, ids: ids) {
                var ends: [GenerationEnd] = []
                for index in builders.indices {
                    ends.append(try await consume(events[index], request: requests[index], arrival: arrival, into: &builders[index]) { _ in })
                }
                return ends
            }
            // Of each prompt's `bestOf`, its `n` most likely in that order; all in order when none are dropped.
            let (n, bestOf) = (prepared.n, prepared.bestOf)
            let kept = stride(from: 0, to: ends.count, by: bestOf).flatMap { first in
                let group = Array(first ..< first + bestOf)
                return bestOf == n ? group : Array(group.sorted { ends[$0].logprob > ends[$1].logprob }.prefix(n))
            }
            let choices = kept.enumerated().map { builders[$1].choice(index: $0, finishReason: ends[$1].reason.rawValue) }
            var response = ends.lazy.compactMap(\.failure).first?.response
                ?? jsonResponse(Builder.whole(identity, choices: choices, usage: usage(ends)))
            response.headers[.connection] = "close"
            return response
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", .connection: "close"],
                        body: ResponseBody { writer in
            var builders = prepared.choices.map(\.builder)
            try await cancellingOnDisconnect(body, ids: ids) {
                // Choice after choice: the others run meanwhile, their events waiting in their streams.
                var ends: [GenerationEnd] = []
                var failure: APIError?
                for index in builders.indices {
                    guard failure == nil else {
                        // Headers are sent: after a failure the other choices are ended and their ends only counted.
                        service.cancel(id: ids[index])
                        ends.append(try await consume(events[index], request: requests[index], arrival: arrival, into: &builders[index]) { _ in })
                        continue
                    }
                    for chunk in builders[index].openingChunks() { try await writer.write(serverSentEvent(chunk)) }
                    let end = try await consume(events[index], request: requests[index], arrival: arrival, into: &builders[index]) {
                        try await writer.write(serverSentEvent($0))
                    }
                    ends.append(end)
                    // A failure mid-stream is reported as an error event, as OpenAI-compatible servers do.
                    failure = end.failure
                    try await writer.write(failure.map { serverSentEvent($0.body) } ?? serverSentEvent(builders[index].closingChunk(finishReason: end.reason.rawValue)))
                }
                if failure == nil && identity.includeUsage { try await writer.write(serverSentEvent(Builder.usageChunk(identity, usage: usage(ends)))) }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            }
            try await writer.finish(nil)
        })
    }

    /// Feeds the request's events to `builder`, handing each chunk to `emit`, and records its latencies and outcome.
    /// Every submitted request is counted once, by how it ended: when `emit` fails (the client went away, or stopped
    /// reading until the connection was closed) the request is cancelled and its `.finished` event still awaited.
    private func consume<Builder: ResponseBuilder>(
        _ events: AsyncStream<GenerationEvent>, request: EngineRequest, arrival: ContinuousClock.Instant, into builder: inout Builder,
        emit: (Builder.Chunk) async throws -> Void
    ) async throws -> GenerationEnd {
        let (id, promptTokens) = (request.id, request.promptIDs.count)
        var lastToken: ContinuousClock.Instant?
        var generated = 0
        var emitFailure: (any Error)?
        var logprob = 0.0
        func send(_ chunk: Builder.Chunk?) async {
            guard emitFailure == nil, let chunk else { return }
            do {
                try await emit(chunk)
            } catch {
                emitFailure = error
                service.cancel(id: id)
            }
        }
        for await event in events {
            switch event {
            case let .prompt(logprobs):
                await send(builder.appendPrompt(logprobs))
            case let .token(token, text, chosen, top):
                logprob += Double(chosen?.logprob ?? 0)
                let now = ContinuousClock.now
                if let lastToken {
                    await metrics.nextToken(after: (now - lastToken).seconds)
                } else {
                    await metrics.firstToken(after: (now - arrival).seconds)
                }
                lastToken = now
                generated += 1
                await send(builder.append(text: text, token: token, logprob: chosen, top: top))
            case let .finished(reason, usage, message):
                await metrics.finished(reason, usage: usage)
                let milliseconds = Int((ContinuousClock.now - arrival).seconds * 1000)
                logger.info("\(id): \(reason.rawValue) after \(usage.completionTokens) tokens in \(milliseconds) ms\(message.map { ": \($0)" } ?? "")")
                if let emitFailure { throw emitFailure }
                return GenerationEnd(reason: reason, usage: usage, message: message, logprob: logprob)
            }
        }
        // The stream ends without `.finished` only when this task is cancelled (the server is stopping): its
        // `.finished` will not be read here, so it is counted now.
        service.cancel(id: id)
        await metrics.finished(.cancelled, usage: Usage(promptTokens: promptTokens, completionTokens: generated))
        logger.info("\(id): cancelled with its connection after \(generated) tokens")
        throw emitFailure ?? CancellationError()
    }

    /// Runs `operation`, cancelling the engine requests when the client's connection closes (noticed at once, even
    /// while the request waits for its first token) or when `operation` fails (a write to a closed connection).
    /// Watching for the close reads the connection to its end, so it cannot serve another request: responses say
    /// `Connection: close`, and clients open a new one.
    private func cancellingOnDisconnect<T: Sendable>(_ body: RequestBody, ids: [String], _ operation: () async throws -> T) async throws -> T {
        do {
            return try await body.consumeWithInboundCloseHandler({ _ in try await operation() },
                                                                 onInboundClosed: { [service] in ids.forEach(service.cancel) })
        } catch {
            ids.forEach(service.cancel)
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
