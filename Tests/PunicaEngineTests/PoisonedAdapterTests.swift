import Foundation
import PunicaCPU
import PunicaCompute
import PunicaEngine
@testable import PunicaModel
import PunicaTokenizer
import Testing
import TestSupport

/// One request's adapter turns its logits into NaN (weights made non-finite after validation, which the loader would
/// refuse): that request ends with `.error`, and every other request in the same batches, on other adapters or the
/// base model, produces the tokens it produces alone.
@Suite struct PoisonedAdapterTests {
    /// The real model; the adapter named "poisoned" is built here with NaN in every lora_B, bypassing the loader.
    final class PoisoningRunner: ModelRunner {
        let inner: LlamaRunner
        init(_ inner: LlamaRunner) { self.inner = inner }

        var vocabularySize: Int { inner.vocabularySize }
        var maxPositions: Int { inner.maxPositions }
        var eosTokenIDs: [Int] { inner.eosTokenIDs }
        var pageSize: Int { inner.pageSize }
        var pageCount: Int { inner.pageCount }
        var kvCacheDType: DType { inner.kvCacheDType }
        var adapterSlotCount: Int { inner.adapterSlotCount }

        func validateAdapter(directory: String) throws {
            if directory != "poisoned" { try inner.validateAdapter(directory: directory) }
        }

        /// "poisoned" is the fixture adapter alpha with NaN in every B of its host copy.
        func loadAdapter(name: String, directory: String) throws -> HostAdapter {
            guard directory == "poisoned" else { return try inner.loadAdapter(name: name, directory: directory) }
            let adapter = try inner.loadAdapter(name: name, directory: Fixtures.path("models/llama-gqa/adapters/alpha"))
            let floats = adapter.slabs[0].buffer.pointer.assumingMemoryBound(to: Float.self)  // the CPU's weight type
            for piece in adapter.slabs[0].layout.joined().compactMap({ $0 }).flatMap(\.pieces) {
                (floats + piece.b.offset).update(repeating: .nan, count: piece.b.shape.reduce(1, *))
            }
            return adapter
        }

        func setSlot(_ slot: Int, to adapter: HostAdapter?) { inner.setSlot(slot, to: adapter) }

        func run(_ batch: StepBatch, fed: FedTokens?, choices: [TokenChoice], returnLogits: [Bool]) -> StepOutput {
            inner.run(batch, fed: fed, choices: choices, returnLogits: returnLogits)
        }
    }

    @Test func aPoisonedAdapterEndsOnlyItsOwnRequests() async throws {
        let directory = Fixtures.path("models/llama-gqa")
        let model = try LlamaModel(directory: directory, backend: CPUBackend())
        let tokenizer = try Tokenizer(directory: directory)
        func engine() async throws -> Engine {
            // A small cache (24 pages of 4): pages the poisoned requests wrote NaN into get reused.
            let engine = Engine(runner: PoisoningRunner(LlamaRunner(model: model, pageSize: 4, pageCount: 25, adapterSlots: 4)),
                                tokenizer: tokenizer)
            for name in ["alpha", "beta"] { try await engine.registerAdapter(name: name, directory: "\(directory)/adapters/\(name)") }
            try await engine.registerAdapter(name: "poisoned", directory: "poisoned")
            return engine
        }
        func request(_ id: String, adapter: String?, temperature: Float, logprobs: Int = 0) -> EngineRequest {
            var sampling = SamplingParameters()
            sampling.temperature = temperature
            sampling.seed = 7
            sampling.maxTokens = 6
            sampling.ignoreEOS = true
            sampling.logprobs = logprobs
            return EngineRequest(id: id, promptIDs: [5, 17, 230, 41, 9], adapter: adapter, sampling: sampling)
        }
        let good = [request("base", adapter: nil, temperature: 0), request("alpha", adapter: "alpha", temperature: 0.8, logprobs: 2),
                    request("beta", adapter: "beta", temperature: 0)]
        let poisoned = [request("nan-greedy", adapter: "poisoned", temperature: 0),
                        request("nan-sampled", adapter: "poisoned", temperature: 1, logprobs: 3)]

        let shared = try await engine()
        let together = try await shared.complete(poisoned + good)
        for completion in together.prefix(2) {
            #expect(completion.finishReason == .error && completion.tokenIDs.isEmpty, "\(completion.id)")
            #expect(completion.message?.contains("non-finite logits") == true && completion.message?.contains("poisoned") == true,
                    "\(completion.message ?? "no message")")
        }
        // Again, on the pages the poisoned requests left behind.
        let after = try await shared.complete(good)
        #expect(shared.stats().kvPagesUsed == 0 && shared.stats().running == 0)
        await shared.drain()

        let solo = try await engine()
        for (index, request) in good.enumerated() {
            let alone = try await solo.complete([request])[0]
            #expect(alone.finishReason == .length && alone.tokenIDs.count == 6)
            #expect(together[2 + index].tokenIDs == alone.tokenIDs && together[2 + index].finishReason == .length, "\(request.id)")
            #expect(after[index].tokenIDs == alone.tokenIDs, "\(request.id) after the poisoned requests")
        }
        await solo.drain()
    }
}
