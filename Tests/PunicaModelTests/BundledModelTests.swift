import Foundation
import PunicaCPU
import PunicaEngine
import PunicaModel
import PunicaTokenizer
import Testing
import TestSupport

/// The bundled model (models/) against the greedy outputs transformers + PEFT recorded when it was trained
/// (models/reference_outputs.json: base and each adapter on prompts of every domain).
@Suite struct BundledModelTests {
    struct Reference: Decodable {
        struct Case: Decodable {
            let domain: String
            let adapter: String?
            let prompt: String
            let prompt_ids: [Int]
            let output_ids: [Int]
            /// Top-1 minus top-2 logit at each step of the reference.
            let margins: [Float]
        }
        let cases: [Case]
    }

    let directory = Fixtures.repositoryPath("models")
    let reference: Reference

    init() throws {
        reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/reference_outputs.json")))
    }

    @Test func tokenizerReproducesTheTrainingPromptIDs() throws {
        let tokenizer = try Tokenizer(directory: directory)
        for testCase in reference.cases { #expect(tokenizer.encode(testCase.prompt) == testCase.prompt_ids, "\(testCase.prompt)") }
    }

    /// All 50 cases run as one batch. Our float32 CPU run and the reference's float32 GPU run differ by rounding, so
    /// each continuation must agree up to the first step where the reference's top two logits are within 0.02 (a
    /// near-tie that rounding may flip); most of the tokens must fall before such a step.
    @Test func greedyOutputsMatchTheTrainingReference() async throws {
        let model = try LlamaModel(directory: directory, backend: CPUBackend())
        let engine = try Engine(model: model, tokenizer: try Tokenizer(directory: directory))
        for name in ["fortunes", "manpages", "python", "scripture"] {
            try await engine.registerAdapter(name: name, directory: "\(directory)/adapters/\(name)")
        }
        let requests = reference.cases.enumerated().map { index, testCase in
            var sampling = SamplingParameters()
            sampling.temperature = 0
            sampling.maxTokens = testCase.output_ids.count
            sampling.ignoreEOS = true
            return EngineRequest(id: String(index), promptIDs: testCase.prompt_ids, adapter: testCase.adapter, sampling: sampling)
        }
        let results = try await engine.complete(requests)
        await engine.drain()
        var compared = 0, total = 0
        for (testCase, result) in zip(reference.cases, results) {
            let decisive = testCase.margins.firstIndex { $0 < 0.02 } ?? testCase.margins.count
            #expect(Array(result.tokenIDs.prefix(decisive)) == Array(testCase.output_ids.prefix(decisive)),
                    "\(testCase.adapter ?? "base") on \(testCase.domain) prompt \(testCase.prompt.debugDescription)")
            compared += decisive
            total += testCase.output_ids.count
        }
        #expect(compared * 2 >= total, "only \(compared) of \(total) reference tokens precede a near-tie")
    }
}
