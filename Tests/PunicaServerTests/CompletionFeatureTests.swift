import Foundation
import Hummingbird
import HummingbirdTesting
import PunicaCPU
import PunicaEngine
import PunicaModel
import TestSupport
import Testing

/// `/v1/completions` as lm-evaluation-harness, langchain and the legacy API use it: prompt lists, token ids, `n`,
/// `echo` with logprobs, vLLM's `prompt_logprobs` and sampling fields.
@Suite struct CompletionFeatureTests {
    func choices(_ json: JSON) throws -> [JSON] { try #require(json["choices"] as? [JSON]) }

    /// Each prompt of a list gets `n` choices, indexed prompt-major, grouped to share the prompt's prefill (under the
    /// first choice's id); the usage counts each prompt once.
    @Test func promptListsAndNAreIndependentChoices() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let json = try await client.post("/v1/completions", #"{"model": "base", "prompt": ["a b", "c"], "n": 2, "max_tokens": 2, "seed": 5}"#).json
            let choices = try choices(json)
            #expect(choices.map { $0["index"] as? Int } == [0, 1, 2, 3])
            #expect(choices.allSatisfy { $0["text"] as? String == fake.expectedText(tokens: 2) && $0["finish_reason"] as? String == "length" })
            let (first, second) = (fake.tokenizer.encode("a b"), fake.tokenizer.encode("c"))
            #expect(fake.submitted.map(\.promptIDs) == [first, first, second, second])
            #expect(Set(fake.submitted.map(\.id)).count == 4, "each choice is its own engine request")
            #expect(fake.submitted.map(\.sampling.seed) == [5, 6, 5, 6], "a prompt's choices draw from their own seeds")
            let leaders = [0, 0, 2, 2].map { fake.submitted[$0].id }
            #expect(fake.submitted.map(\.promptGroup) == leaders)
            #expect(json["usage"] as? [String: Int] == ["prompt_tokens": first.count + second.count, "completion_tokens": 8,
                                                       "total_tokens": first.count + second.count + 8])
        }
    }

    /// `best_of`: each prompt's choices generated, the `n` with the highest summed logprob returned, best first,
    /// reindexed; the usage counts every generated token. Logprobs are asked of the engine even when not shown.
    @Test func bestOfReturnsTheMostLikelyChoices() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let json = try await client.post("/v1/completions",
                                             #"{"model": "base", "prompt": ["a", "b"], "n": 2, "best_of": 3, "max_tokens": 2, "seed": 5}"#).json
            let returned = try choices(json)
            #expect(returned.map { $0["index"] as? Int } == [0, 1, 2, 3] && returned.allSatisfy { $0["logprobs"] is NSNull })
            #expect(fake.submitted.count == 6 && fake.submitted.allSatisfy { $0.sampling.logprobs == 1 })
            #expect((json["usage"] as? [String: Int])?["completion_tokens"] == 12)
            let shown = try await client.post("/v1/completions", #"{"model": "base", "prompt": "a", "n": 2, "best_of": 3, "max_tokens": 1, "seed": 5, "logprobs": 0}"#).json
            let first = try choices(shown).map { (($0["logprobs"] as? JSON)?["token_logprobs"] as? [Double])?.first ?? 0 }
            // Seeds 5, 6, 7: the fake makes 7's tokens likeliest, then 6's.
            #expect(zip(first, [-0.43, -0.44]).allSatisfy { abs($0 - $1) < 1e-5 }, "\(first)")
        }
    }

    /// Token ids go to the engine as given (no BOS added); a list of lists is a batch.
    @Test func tokenIDPromptsReachTheEngineAsGiven() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            #expect(try await client.post("/v1/completions", #"{"model": "base", "prompt": [5, 6, 7], "max_tokens": 1}"#).status == .ok)
            let json = try await client.post("/v1/completions", #"{"model": "base", "prompt": [[8], [9, 10]], "max_tokens": 1}"#).json
            #expect(try choices(json).count == 2)
            #expect(fake.submitted.map(\.promptIDs) == [[5, 6, 7], [8], [9, 10]])
            #expect(fake.submitted.allSatisfy { $0.promptGroup == nil }, "one choice shares with none")
        }
    }

    @Test func echoWritesThePromptBeforeTheCompletion() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let json = try await client.post("/v1/completions", #"{"model": "base", "prompt": "Once upon", "echo": true, "max_tokens": 3}"#).json
            #expect(try choices(json).first?["text"] as? String == "Once upon" + fake.expectedText(tokens: 3))
            #expect(fake.submitted.first?.sampling.promptLogprobs == nil, "no prompt scoring without logprobs")
            let streamed = try await client.post("/v1/completions", #"{"model": "base", "prompt": "Once upon", "echo": true, "max_tokens": 3, "stream": true}"#)
            let text = try streamed.events.compactMap { ($0["choices"] as? [JSON])?.first?["text"] as? String }.joined()
            #expect(text == "Once upon" + fake.expectedText(tokens: 3))
        }
    }

    /// lm-evaluation-harness's loglikelihood request: the prompt's tokens with logprobs, the first null, then the
    /// generated token; offsets count through the prompt.
    @Test(arguments: [0, 1]) func echoWithLogprobsScoresThePrompt(maxTokens: Int) async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let prompt = [11, 12, 13, 14]
            let body = #"{"model": "base", "prompt": \#(prompt), "echo": true, "logprobs": 1, "max_tokens": \#(maxTokens), "temperature": 0}"#
            let json = try await client.post("/v1/completions", body).json
            #expect(fake.submitted.first?.sampling.promptLogprobs == 1 && fake.submitted.first?.sampling.maxTokens == maxTokens)
            let logprobs = try #require(try choices(json).first?["logprobs"] as? JSON)
            let tokens = try #require(logprobs["tokens"] as? [String])
            let names = prompt.map { fake.tokenizer.decode([$0], skipSpecialTokens: false) }
            #expect(Array(tokens.prefix(4)) == names && tokens.count == 4 + maxTokens)
            let values = try #require(logprobs["token_logprobs"] as? [Any])
            #expect(values.first is NSNull)
            #expect(values.dropFirst().prefix(3).compactMap { $0 as? Double } == [-0.25, -0.5, -0.75])
            let top = try #require(logprobs["top_logprobs"] as? [Any])
            #expect(top.first is NSNull && (top[1] as? [String: Double])?[names[1]] == -0.25)
            let offsets = try #require(logprobs["text_offset"] as? [Int])
            #expect(offsets == tokens.indices.map { tokens[..<$0].reduce(0) { $0 + $1.unicodeScalars.count } })
        }
    }

    /// vLLM's `prompt_logprobs`: null, then per prompt token {id: {logprob, rank, decoded_token}} with the top ones.
    @Test func promptLogprobsHaveVLLMsShape() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            for stream in [false, true] {
                let body = #"{"model": "base", "prompt": [20, 21, 22], "prompt_logprobs": 1, "max_tokens": 1, "stream": \#(stream)}"#
                let response = try await client.post("/v1/completions", body)
                let choice = try #require(stream ? try response.events.compactMap { ($0["choices"] as? [JSON])?.first }.first { $0["prompt_logprobs"] != nil }
                                                 : try choices(response.json).first)
                let scored = try #require(choice["prompt_logprobs"] as? [Any])
                #expect(scored.count == 3 && scored[0] is NSNull)
                let second = try #require(scored[2] as? [String: JSON])
                #expect(second["22"]?["logprob"] as? Double == -0.5 && second["22"]?["rank"] as? Int == 3)
                #expect(second["22"]?["decoded_token"] as? String == fake.tokenizer.decode([22], skipSpecialTokens: false))
                #expect(second.count == 2, "the prompt token and the top one")
            }
        }
    }

    /// Streaming n > 1: every choice's chunks carry its index and each ends with its finish reason.
    @Test func streamedChoicesCarryTheirIndex() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let events = try await client.post("/v1/completions", #"{"model": "base", "prompt": "x", "n": 3, "max_tokens": 2, "stream": true}"#).events
            let chunks = events.compactMap { ($0["choices"] as? [JSON])?.first }
            for index in 0..<3 {
                let own = chunks.filter { $0["index"] as? Int == index }
                #expect(own.compactMap { $0["text"] as? String }.joined() == fake.expectedText(tokens: 2))
                #expect(own.compactMap { $0["finish_reason"] as? String } == ["length"])
            }
            let chat = try await client.post("/v1/chat/completions",
                                             #"{"model": "base", "messages": [{"role": "user", "content": "Hi"}], "n": 2, "max_tokens": 2}"#).json
            #expect(try choices(chat).map { $0["index"] as? Int } == [0, 1])
            let group = fake.submitted.suffix(2).map(\.promptGroup)
            #expect(group == [chat["id"] as? String, chat["id"] as? String])
        }
    }

    /// Every sampling field reaches the engine, on both endpoints.
    @Test func samplingFieldsReachTheEngine() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let fields = #""presence_penalty": 0.5, "frequency_penalty": -0.25, "repetition_penalty": 1.2, "logit_bias": {"7": -100, "9": 2.5}, "#
                + #""min_tokens": 2, "min_p": 0.05, "stop_token_ids": [3, 4], "ignore_eos": true, "skip_special_tokens": false, "max_tokens": 4, "use_beam_search": false"#
            let completion = try await client.post("/v1/completions", #"{"model": "base", "prompt": "x", "# + fields + "}")
            let chat = try await client.post("/v1/chat/completions", #"{"model": "base", "messages": [{"role": "user", "content": "x"}], "# + fields + "}")
            #expect(completion.status == .ok && chat.status == .ok, "\(completion.text) \(chat.text)")
            for request in fake.submitted {
                let s = request.sampling
                #expect(s.presencePenalty == 0.5 && s.frequencyPenalty == -0.25 && s.repetitionPenalty == 1.2)
                #expect(s.logitBias == [7: -100, 9: 2.5] && s.minTokens == 2 && s.minP == 0.05 && s.stopTokenIDs == [3, 4])
                #expect(s.ignoreEOS && !s.skipSpecialTokens)
            }
        }
    }

    /// vLLM's tokenizer routes: the ids completions would use, the chat template's rendering, and back to text.
    @Test func tokenizeAndDetokenize() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let json = try await client.post("/tokenize", #"{"model": "base", "prompt": "Hello there", "return_token_strs": true}"#).json
            let ids = fake.tokenizer.encode("Hello there")
            #expect(json["tokens"] as? [Int] == ids && json["count"] as? Int == ids.count && json["max_model_len"] as? Int == 64)
            #expect(json["token_strs"] as? [String] == ids.map { fake.tokenizer.decode([$0], skipSpecialTokens: false) })
            let bare = try await client.post("/tokenize", #"{"prompt": "Hello there", "add_special_tokens": false}"#).json
            #expect(bare["tokens"] as? [Int] == fake.tokenizer.encode("Hello there", addSpecialTokens: false) && bare["token_strs"] is NSNull)
            let chat = try await client.post("/tokenize", #"{"model": "python", "messages": [{"role": "user", "content": "Hi"}]}"#).json
            #expect((chat["count"] as? Int ?? 0) > 1)
            let text = try await client.post("/detokenize", #"{"model": "base", "tokens": \#(ids)}"#).json
            #expect(text["prompt"] as? String == fake.tokenizer.decode(ids, skipSpecialTokens: false))
            try expectError(try await client.post("/tokenize", #"{"model": "nope", "prompt": "x"}"#), .notFound, param: "model", code: "model_not_found")
            try expectError(try await client.post("/tokenize", #"{"prompt": "x", "messages": []}"#), .badRequest, param: "prompt", code: "invalid_value")
            try expectError(try await client.post("/detokenize", #"{"tokens": [-1]}"#), .badRequest, param: "tokens", code: "invalid_value")
        }
    }

    /// vLLM's /tokenizer_info: lm-eval's `local-completions` asks it for `eos_token` and, when it answers, tokenizes
    /// through /tokenize (its bos_token_id is the first id of `bos_token`, its eos_token_id that of `eos_token`).
    @Test func tokenizerInfoNamesTheSpecialTokens() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let json = try await client.get("/tokenizer_info").json
            #expect(json["bos_token"] as? String == "<s>" && json["eos_token"] as? String == "</s>" && json["unk_token"] as? String == "<unk>")
            #expect(json["pad_token"] == nil, "the bundled tokenizer has none")
            #expect(json["model_max_length"] as? Int == fake.maxContextLength)
            #expect(json["chat_template"] as? String == fake.tokenizer.chatTemplates["default"] && json["chat_template"] != nil)
            for (field, id) in [("bos_token", fake.tokenizer.bosTokenID), ("eos_token", fake.tokenizer.eosTokenIDs.first)] {
                let text = try #require(json[field] as? String)
                #expect(fake.tokenizer.encode(text, addSpecialTokens: false) == [try #require(id)], "\(field) encodes to its id")
            }
        }
    }

    /// A loglikelihood through `/v1/completions` (lm-evaluation-harness's request, token-id prompts) on a real
    /// engine: each prompt token's logprob is the log-softmax of transformers' logits at the position before it,
    /// and the generated token's logprob is the generation's own.
    @Test func loglikelihoodEqualsTheForwardPassLogSoftmax() async throws {
        let name = "llama-gqa"
        let fixture = try LoadedFixture(name, backend: CPUBackend())
        let expected = try SafeTensorsFile(path: Fixtures.path("models/\(name)/expected_logits.safetensors"))
        let engine = try await fixture.engine()
        let vocabulary = fixture.model.config.vocabularySize
        try await withServer(engine) { client in
            for testCase in fixture.reference.cases where testCase.adapter == nil || testCase.adapter == fixture.adapterNames.first {
                let prompt = fixture.reference.prompts[testCase.prompt_index]
                let body = #"{"model": "\#(testCase.adapter ?? "base")", "prompt": \#(prompt), "echo": true, "logprobs": 1, "max_tokens": 1, "temperature": 0}"#
                let json = try await client.post("/v1/completions", body).json
                let logprobs = try #require(try choices(json).first?["logprobs"] as? JSON, "\(json)")
                let values = try #require(logprobs["token_logprobs"] as? [Any])
                #expect(values.count == prompt.count + 1 && values.first is NSNull)
                let reference = try #require(expected.tensor(testCase.logits_key))
                let logits = UnsafeBufferPointer(start: reference.bytes.assumingMemoryBound(to: Float.self), count: reference.elementCount)
                func logSoftmax(_ position: Int, _ token: Int) -> Float {
                    let row = logits[position * vocabulary ..< (position + 1) * vocabulary].map(Double.init)
                    let top = row.max()!
                    return Float(row[token] - top - log(row.reduce(0) { $0 + exp($1 - top) }))
                }
                let scored = values.dropFirst().prefix(prompt.count - 1).compactMap { ($0 as? Double).map(Float.init) }
                let mismatch = closeMismatch(scored, (1..<prompt.count).map { logSoftmax($0 - 1, prompt[$0]) }, atol: 1e-3)
                #expect(mismatch == nil, "\(testCase.logits_key): \(mismatch ?? "")")
                #expect(abs(Float(values.last as? Double ?? 0) - testCase.logprobs[0].token_logprob) < 1e-3, "the generated token's own logprob")
            }
        }
        await engine.drain()
    }
}
