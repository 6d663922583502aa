import Foundation
import PunicaEngine
import PunicaTokenizer
import TestSupport

/// A scripted engine: every request generates `maxTokens` tokens cycling through `script`, at once, with made-up
/// logprobs (and prompt logprobs when asked); it records what it was asked, so server tests check exactly what reached the engine.
final class FakeGenerationService: GenerationService, @unchecked Sendable {
    /// The bundled model's tokenizer, loaded once for all tests.
    static let bundledTokenizer = try! Tokenizer(directory: Fixtures.repositoryPath("models"))

    let tokenizer: Tokenizer
    let maxContextLength = 64
    /// The token ids every generation cycles through.
    let script: [Int]
    /// `submit` refuses with `queueFull` once this many requests were submitted.
    var queueLimit = Int.max
    /// Ends every generation with `.error` and this message.
    var failure: String?
    /// Adapters `unregisterAdapter` refuses as in use.
    var busyAdapters: Set<String> = []
    var engineStats = EngineStats(running: 2, waiting: 1, kvPagesUsed: 7, kvPagesTotal: 100, requestsPerAdapter: ["": 1, "python": 2],
                                  generatedTokensPerSecond: 12.5, steps: 3, lastStepSequences: 2, lastStepTokens: 2)

    private let lock = NSLock()
    private var adapters: [String: String]
    private var submittedRequests: [EngineRequest] = []
    private var cancelledIDs: [String] = []

    init(tokenizer: Tokenizer = bundledTokenizer, adapters: [String: String] = ["python": "/adapters/python", "scripture": "/adapters/scripture"]) {
        self.tokenizer = tokenizer
        self.adapters = adapters
        script = tokenizer.encode(" the cat sat on the mat", addSpecialTokens: false)
    }

    var submitted: [EngineRequest] { lock.withLock { submittedRequests } }
    var cancelled: [String] { lock.withLock { cancelledIDs } }

    /// The text a request of `count` tokens generates.
    func expectedText(tokens count: Int) -> String {
        tokenizer.decode((0..<count).map { script[$0 % script.count] })
    }

    func adapterNames() -> [String] { lock.withLock { adapters.keys.sorted() } }

    func submit(_ request: EngineRequest) throws(RequestError) -> AsyncStream<GenerationEvent> {
        try request.sampling.validate()
        if let adapter = request.adapter, !adapterNames().contains(adapter) { throw .unknownAdapter(adapter, known: adapterNames()) }
        let queued = lock.withLock {
            guard submittedRequests.count < queueLimit else { return false }
            submittedRequests.append(request)
            return true
        }
        if !queued { throw .queueFull(limit: queueLimit) }
        let sampling = request.sampling
        var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
        var events: [GenerationEvent] = (0..<sampling.maxTokens).map { index in
            let id = script[index % script.count]
            // A seeded request's tokens are 0.01 × seed more likely, so `best_of` has something to rank.
            let chosen = TokenLogprob(id: id, logprob: -0.5 * Float(index + 1) + 0.01 * Float(sampling.seed ?? 0))
            let top = sampling.logprobs > 0 ? Array(([chosen] + script.map { TokenLogprob(id: $0, logprob: -3) }).prefix(sampling.logprobs)) : []
            return .token(id: id, text: detokenizer.append(id), logprob: sampling.logprobs > 0 ? chosen : nil, top: top)
        }
        if let count = sampling.promptLogprobs {
            // Prompt token p + 1 scored -0.25·(p + 1), ranked p + 2, after `count` alternatives from the script.
            events.insert(.prompt(logprobs: request.promptIDs.dropFirst().enumerated().map { position, id in
                TokenLogprobs(chosen: TokenLogprob(id: id, logprob: -0.25 * Float(position + 1)), rank: position + 2,
                              top: script.prefix(count).map { TokenLogprob(id: $0, logprob: -0.1) })
            }), at: 0)
        }
        let usage = Usage(promptTokens: request.promptIDs.count, completionTokens: sampling.maxTokens)
        events.append(.finished(reason: failure == nil ? .length : .error, usage: usage, message: failure))
        return AsyncStream { continuation in
            events.forEach { continuation.yield($0) }
            continuation.finish()
        }
    }

    func cancel(id: String) { lock.withLock { cancelledIDs.append(id) } }

    func registerAdapter(name: String, directory: String) async throws {
        guard FileManager.default.fileExists(atPath: directory + "/adapter_config.json") else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: directory + "/adapter_config.json"])
        }
        lock.withLock { adapters[name] = directory }
    }

    func unregisterAdapter(name: String) async throws {
        if busyAdapters.contains(name) { throw RequestError.adapterInUse(name, requests: 1) }
        lock.withLock { adapters[name] = nil }
    }

    func stats() -> EngineStats { engineStats }

    func drain() async {}
}
