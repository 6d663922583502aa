import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import PunicaEngine
import PunicaServer
import PunicaTokenizer
import TestSupport
import Testing

/// A JSON object from a response body.
typealias JSON = [String: Any]

/// Runs `test` against the server's router (no sockets) over `fake` (or a real engine).
func withServer(_ fake: any GenerationService = FakeGenerationService(), configure: (inout ServerConfiguration) -> Void = { _ in },
                _ test: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
    var configuration = ServerConfiguration(servedModelName: "base", modelDirectory: "/models/base")
    configuration.adapterDirectories = ["python": "/adapters/python", "scripture": "/adapters/scripture"]
    configure(&configuration)
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let server = try OpenAIServer(service: fake, configuration: configuration, logger: logger)
    try await Application(router: server.makeRouter(), logger: logger).test(.router, test)
}

extension TestClientProtocol {
    func post(_ uri: String, _ body: String, headers: HTTPFields = [:]) async throws -> TestResponse {
        try await execute(uri: uri, method: .post, headers: headers.merging([.contentType: "application/json"]), body: ByteBuffer(string: body))
    }

    func get(_ uri: String, headers: HTTPFields = [:]) async throws -> TestResponse {
        try await execute(uri: uri, method: .get, headers: headers)
    }
}

extension HTTPFields {
    func merging(_ other: HTTPFields) -> HTTPFields {
        var merged = self
        for field in other { merged.append(field) }
        return merged
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }

    var json: JSON {
        get throws { try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? JSON, "not a JSON object: \(text)") }
    }

    /// The `data:` payloads of a server-sent event stream, checking its framing: every event is `data: …` and a
    /// blank line, and the last one is `[DONE]`.
    var events: [JSON] {
        get throws {
            #expect(headers[.contentType] == "text/event-stream")
            #expect(text.hasSuffix("\n\n"))
            let payloads = text.split(separator: "\n\n", omittingEmptySubsequences: false).dropLast().map { event in
                #expect(event.hasPrefix("data: "), "\(event)")
                return event.dropFirst("data: ".count)
            }
            #expect(payloads.last == "[DONE]")
            return try payloads.dropLast().map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? JSON) }
        }
    }
}

@Suite struct CompletionTests {
    @Test func completionHasOpenAIShapeAndReachesTheEngine() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let response = try await client.post("/v1/completions", #"{"model": "base", "prompt": "Hello there", "max_tokens": 5}"#)
            #expect(response.status == .ok)
            let json = try response.json
            #expect((json["id"] as? String)?.hasPrefix("cmpl-") == true)
            #expect(json["object"] as? String == "text_completion")
            #expect(json["created"] is Int)
            #expect(json["model"] as? String == "base")
            let choice = try #require((json["choices"] as? [JSON])?.first)
            #expect(choice["index"] as? Int == 0)
            #expect(choice["text"] as? String == fake.expectedText(tokens: 5))
            #expect(choice["finish_reason"] as? String == "length")
            #expect(choice["logprobs"] is NSNull)
            let promptIDs = fake.tokenizer.encode("Hello there")
            #expect(json["usage"] as? [String: Int] == ["prompt_tokens": promptIDs.count, "completion_tokens": 5, "total_tokens": promptIDs.count + 5])

            let request = try #require(fake.submitted.first)
            #expect(request.id == json["id"] as? String)
            #expect(request.adapter == nil && request.promptIDs == promptIDs && request.sampling.maxTokens == 5)
        }
    }

    @Test func samplingFieldsReachTheEngine() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let body = #"{"model": "python", "prompt": ["def"], "max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "seed": -1, "stop": "\n\n", "ignore_eos": true}"#
            #expect(try await client.post("/v1/completions", body).status == .ok)
            _ = try await client.post("/v1/completions", #"{"model": "base", "prompt": "x", "stop": ["a", "b"]}"#)
            let (first, second) = (fake.submitted[0], fake.submitted[1])
            #expect(first.adapter == "python")
            #expect(first.sampling.temperature == 0.5 && first.sampling.topP == 0.9 && first.sampling.topK == 40)
            #expect(first.sampling.seed == UInt64.max && first.sampling.stopStrings == ["\n\n"] && first.sampling.ignoreEOS)
            #expect(second.sampling.stopStrings == ["a", "b"])
            #expect(second.sampling.maxTokens == 16, "OpenAI's completions default")
        }
    }

    @Test func legacyLogprobs() async throws {
        try await withServer { client in
            let json = try await client.post("/v1/completions", #"{"model": "base", "prompt": "x", "max_tokens": 3, "logprobs": 2}"#).json
            let logprobs = try #require((json["choices"] as? [JSON])?.first?["logprobs"] as? JSON)
            let tokens = try #require(logprobs["tokens"] as? [String])
            #expect(tokens.count == 3)
            #expect((logprobs["token_logprobs"] as? [Double]) == [-0.5, -1, -1.5])
            let top = try #require(logprobs["top_logprobs"] as? [[String: Double]])
            #expect(top.count == 3 && top.allSatisfy { (1...3).contains($0.count) })
            #expect(top[0][tokens[0]] == -0.5, "the chosen token is always listed")
            let offsets = try #require(logprobs["text_offset"] as? [Int])
            #expect(offsets == [0, tokens[0].unicodeScalars.count, tokens[0].unicodeScalars.count + tokens[1].unicodeScalars.count])
        }
    }

    @Test func streamedCompletionMatchesTheWholeOne() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let response = try await client.post("/v1/completions", #"{"model": "base", "prompt": "x", "max_tokens": 4, "stream": true}"#)
            #expect(response.status == .ok)
            let events = try response.events
            #expect(events.allSatisfy { $0["object"] as? String == "text_completion" && ($0["id"] as? String)?.hasPrefix("cmpl-") == true })
            let choices = events.compactMap { ($0["choices"] as? [JSON])?.first }
            #expect(choices.compactMap { $0["text"] as? String }.joined() == fake.expectedText(tokens: 4))
            #expect(choices.dropLast().allSatisfy { $0["finish_reason"] is NSNull })
            #expect(choices.last?["finish_reason"] as? String == "length")
            #expect(events.allSatisfy { $0["usage"] is NSNull }, "no usage chunk unless asked for")
        }
    }

    @Test func streamWithUsageEndsWithAUsageChunk() async throws {
        try await withServer { client in
            let events = try await client.post("/v1/completions",
                                               #"{"model": "base", "prompt": "x", "max_tokens": 2, "stream": true, "stream_options": {"include_usage": true}}"#).events
            let last = try #require(events.last)
            #expect((last["choices"] as? [Any])?.isEmpty == true)
            #expect((last["usage"] as? JSON)?["completion_tokens"] as? Int == 2)
            #expect(events.dropLast().allSatisfy { $0["usage"] is NSNull })
        }
    }

    @Test func engineFailureIs500OrAnErrorEvent() async throws {
        let fake = FakeGenerationService()
        fake.failure = "adapter weights vanished"
        try await withServer(fake) { client in
            let whole = try await client.post("/v1/completions", #"{"model": "base", "prompt": "x", "max_tokens": 2}"#)
            #expect(whole.status == .internalServerError)
            #expect(try (whole.json["error"] as? JSON)?["code"] as? String == "generation_failed")
            let streamed = try await client.post("/v1/completions", #"{"model": "base", "prompt": "x", "max_tokens": 2, "stream": true}"#)
            let error = try #require(try streamed.events.last?["error"] as? JSON)
            #expect((error["message"] as? String)?.contains("adapter weights vanished") == true)
        }
    }
}

@Suite struct ChatTests {
    @Test func chatRendersTheBundledTemplateAndUsesTheAdapter() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let body = #"{"model": "python", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "max_completion_tokens": 3}"#
            let response = try await client.post("/v1/chat/completions", body)
            #expect(response.status == .ok)
            let json = try response.json
            #expect((json["id"] as? String)?.hasPrefix("chatcmpl-") == true)
            #expect(json["object"] as? String == "chat.completion")
            let choice = try #require((json["choices"] as? [JSON])?.first)
            #expect(choice["message"] as? [String: String] == ["role": "assistant", "content": fake.expectedText(tokens: 3)])
            #expect(choice["finish_reason"] as? String == "length")

            let request = try #require(fake.submitted.first)
            #expect(request.adapter == "python" && request.sampling.maxTokens == 3)
            #expect(request.promptIDs == fake.tokenizer.encode("<s>system: Be brief.\nuser: Hi\nassistant:", addSpecialTokens: false))
            #expect(request.promptIDs.first == fake.tokenizer.bosTokenID, "the template's BOS is a token, not text")
        }
    }

    @Test func chatDefaultsToWhatTheContextLeaves() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            _ = try await client.post("/v1/chat/completions", #"{"model": "base", "messages": [{"role": "user", "content": "Hi"}]}"#)
            let request = try #require(fake.submitted.first)
            #expect(request.sampling.maxTokens == fake.maxContextLength - request.promptIDs.count)
        }
    }

    @Test func streamedChatAnnouncesTheRoleThenDeltas() async throws {
        let fake = FakeGenerationService()
        try await withServer(fake) { client in
            let events = try await client.post("/v1/chat/completions",
                                               #"{"model": "base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": true}"#).events
            #expect(events.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
            let choices = events.compactMap { ($0["choices"] as? [JSON])?.first }
            #expect(choices.first?["delta"] as? [String: String] == ["role": "assistant", "content": ""])
            let deltas = choices.compactMap { $0["delta"] as? JSON }
            #expect(deltas.compactMap { $0["content"] as? String }.joined() == fake.expectedText(tokens: 3))
            #expect(choices.last?["finish_reason"] as? String == "length" && (choices.last?["delta"] as? JSON)?.isEmpty == true)
        }
    }

    @Test func chatLogprobs() async throws {
        try await withServer { client in
            let json = try await client.post("/v1/chat/completions",
                                             #"{"model": "base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "logprobs": true, "top_logprobs": 2}"#).json
            let content = try #require(((json["choices"] as? [JSON])?.first?["logprobs"] as? JSON)?["content"] as? [JSON])
            #expect(content.count == 2)
            for entry in content {
                let token = try #require(entry["token"] as? String)
                #expect(entry["bytes"] as? [Int] == token.utf8.map(Int.init))
                #expect(entry["logprob"] is Double)
                #expect((entry["top_logprobs"] as? [JSON])?.count == 2)
            }
        }
    }

    /// A server over the repository's tokenizer with `template` as chat_template.jinja.
    private func withTemplate(_ template: String, _ body: @Sendable @escaping (any TestClientProtocol, FakeGenerationService) async throws -> Void) async throws {
        let tokenizer = try Tokenizer(tokenizerJSON: Data(contentsOf: URL(fileURLWithPath: Fixtures.repositoryPath("models/tokenizer.json"))),
                                      tokenizerConfig: Data(#"{"bos_token": "<s>", "eos_token": "</s>"}"#.utf8), generationConfig: nil,
                                      chatTemplateFiles: ["default": Data(template.utf8)])
        let fake = FakeGenerationService(tokenizer: tokenizer)
        try await withServer(fake) { client in try await body(client, fake) }
    }

    @Test func unusableTemplateIsRefusedByName() async throws {
        try await withTemplate("{% for m in messages %}{% include 'x' %}{% endfor %}") { client, _ in
            let response = try await client.post("/v1/chat/completions", #"{"model": "base", "messages": [{"role": "user", "content": "Hi"}]}"#)
            #expect(response.status == .badRequest)
            let message = try #require(try (response.json["error"] as? JSON)?["message"] as? String)
            #expect(message.contains("chat_template.jinja") && message.contains("line 1") && message.contains("include"))
            #expect(try await client.post("/v1/completions", #"{"model": "base", "prompt": "Hi"}"#).status == .ok, "completions still work")
        }
    }

    @Test func raiseExceptionIsTheClientsError() async throws {
        try await withTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with a user message') }}{% endif %}x") { client, fake in
            let response = try await client.post("/v1/chat/completions", #"{"model": "base", "messages": [{"role": "assistant", "content": "Hi"}]}"#)
            #expect(response.status == .badRequest)
            let error = try #require(try response.json["error"] as? JSON)
            #expect(error["param"] as? String == "messages")
            let message = try #require(error["message"] as? String)
            #expect(message.hasSuffix("Conversations must start with a user message"))
            #expect(fake.submitted.isEmpty)
        }
    }

    /// tools, tool calls (arguments sent as a JSON string reach the template as an object), tool results,
    /// add_generation_prompt and chat_template_kwargs all reach the template (trim_blocks drops each line's newline).
    @Test func toolsAndTemplateOptionsReachTheTemplate() async throws {
        let template = """
            {% for t in tools %}{{ t.function.parameters | tojson }}{% endfor %}
            {% for m in messages %}{{ m.role[0] }}{{ m.content }}{% for c in m.tool_calls %}{{ c.function.arguments | tojson }}{% endfor %}|{% endfor %}
            {% if add_generation_prompt %}assistant:{% endif %}{{ flavor }}
            """
        try await withTemplate(template) { client, fake in
            let body = #"""
                {"model": "base", "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"b": 1, "a": 2}}}],
                 "messages": [{"role": "user", "content": "Paris?"},
                              {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\", \"n\": 2}"}}]},
                              {"role": "tool", "tool_call_id": "1", "content": "sunny"}],
                 "add_generation_prompt": false, "chat_template_kwargs": {"flavor": "mint"}}
                """#
            let response = try await client.post("/v1/chat/completions", body)
            #expect(response.status == .ok, "\(response.text)")
            let request = try #require(fake.submitted.first)
            let expected = #"{"b": 1, "a": 2}uParis?|aNone{"city": "Paris", "n": 2}|tsunny|mint"#
            #expect(fake.tokenizer.decode(request.promptIDs, skipSpecialTokens: false) == expected)
        }
    }
}
