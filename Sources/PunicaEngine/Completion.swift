/// A request's whole output, gathered from its stream: what offline callers (`punica generate`, benchmarks, tests)
/// want instead of events.
public struct Completion: Sendable {
    public var id: String
    public var tokenIDs: [Int] = []
    public var text = ""
    /// Per generated token: the top `logprobs` tokens, plus the chosen one when it is not among them; nil when the
    /// request asked for none.
    public var logprobs: [[TokenLogprob]]?
    /// Prompt tokens 1..<count scored, when the request asked for `promptLogprobs`.
    public var promptLogprobs: [TokenLogprobs]?
    public var finishReason = FinishReason.error
    public var usage = Usage(promptTokens: 0, completionTokens: 0)
    public var message: String?
}

/// A request of a batch the engine refused; nothing of the batch runs.
public struct RejectedRequest: Error, CustomStringConvertible {
    public let id: String
    public let error: RequestError

    public var description: String { "request \(id): \(error)" }
}

extension GenerationService {
    /// Submits every request at once (so they share batches) and waits for all of them; results in input order.
    public func complete(_ requests: [EngineRequest]) async throws(RejectedRequest) -> [Completion] {
        var streams: [AsyncStream<GenerationEvent>] = []
        for request in requests {
            do {
                streams.append(try submit(request))
            } catch {
                requests.prefix(streams.count).forEach { cancel(id: $0.id) }
                throw RejectedRequest(id: request.id, error: error)
            }
        }
        return await withTaskGroup(of: (Int, Completion).self) { group in
            for (index, stream) in streams.enumerated() {
                let request = requests[index]
                group.addTask { (index, await Self.collect(stream, request: request)) }
            }
            var results = [Completion?](repeating: nil, count: requests.count)
            for await (index, completion) in group { results[index] = completion }
            return results.map { $0! }
        }
    }

    private static func collect(_ stream: AsyncStream<GenerationEvent>, request: EngineRequest) async -> Completion {
        var completion = Completion(id: request.id)
        if request.sampling.logprobs > 0 { completion.logprobs = [] }
        for await event in stream {
            switch event {
            case let .token(id, text, logprob, top):
                completion.tokenIDs.append(id)
                completion.text += text
                if let logprob { completion.logprobs?.append(top.contains { $0.id == id } ? top : top + [logprob]) }
            case let .prompt(logprobs):
                completion.promptLogprobs = logprobs
            case let .finished(reason, usage, message):
                (completion.finishReason, completion.usage, completion.message) = (reason, usage, message)
            }
        }
        return completion
    }
}
