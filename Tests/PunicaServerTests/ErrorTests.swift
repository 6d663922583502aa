import Foundation
import Hummingbird
import HummingbirdTesting
import PunicaServer
import Testing

/// Expects OpenAI's error object with `status`, `param` (nil: null) and `code`.
func expectError(_ response: TestResponse, _ status: HTTPResponse.Status, param: String?, code: String,
                 sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(response.status == status, "\(response.text)", sourceLocation: sourceLocation)
    let error = try #require(try response.json["error"] as? JSON, sourceLocation: sourceLocation)
    #expect((error["message"] as? String)?.isEmpty == false, sourceLocation: sourceLocation)
    #expect(error["type"] is String, sourceLocation: sourceLocation)
    if let param {
        #expect(error["param"] as? String == param, "\(error)", sourceLocation: sourceLocation)
    } else {
        #expect(error["param"] is NSNull, "\(error)", sourceLocation: sourceLocation)
    }
    #expect(error["code"] as? String == code, "\(error)", sourceLocation: sourceLocation)
}

@Suite struct ValidationTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let uri: String
        let body: String
        let status: HTTPResponse.Status
        let param: String?
        var code = "invalid_value"
        var testDescription: String { body }
    }

    static let chat = "/v1/chat/completions", completions = "/v1/completions"

    static let cases: [Case] = [
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "n": 17}"#, status: .badRequest, param: "n"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "n": 0}"#, status: .badRequest, param: "n"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "n": 2, "best_of": 1}"#, status: .badRequest, param: "best_of"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "best_of": 17}"#, status: .badRequest, param: "best_of"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "best_of": 2, "stream": true}"#, status: .badRequest, param: "best_of"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "suffix": "end"}"#, status: .badRequest, param: "suffix"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "prompt_logprobs": 21}"#, status: .badRequest, param: "prompt_logprobs"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "logit_bias": {"a": 1}}"#, status: .badRequest, param: "logit_bias"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "logit_bias": {"5": 200}}"#, status: .badRequest, param: "logit_bias"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "presence_penalty": 3}"#, status: .badRequest, param: "presence_penalty"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "frequency_penalty": -3}"#, status: .badRequest, param: "frequency_penalty"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "repetition_penalty": 0}"#, status: .badRequest, param: "repetition_penalty"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "min_p": 2}"#, status: .badRequest, param: "min_p"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "max_tokens": 2, "min_tokens": 3}"#, status: .badRequest, param: "min_tokens"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "use_beam_search": true}"#, status: .badRequest, param: "use_beam_search"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "response_format": {"type": "json_object"}}"#, status: .badRequest,
             param: "response_format"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": "user", "content": "x"}], "guided_json": {}}"#, status: .badRequest,
             param: "guided_json"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "temperature": -1}"#, status: .badRequest, param: "temperature"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "top_p": 0}"#, status: .badRequest, param: "top_p"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "max_tokens": -1}"#, status: .badRequest, param: "max_tokens"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "max_tokens": 101}"#, status: .badRequest, param: "max_tokens"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "max_tokens": 64}"#, status: .badRequest, param: "max_tokens"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "max_tokens": "ten"}"#, status: .badRequest, param: "max_tokens"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "logprobs": 21}"#, status: .badRequest, param: "logprobs"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "stop": [1]}"#, status: .badRequest, param: "stop"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "stop": ""}"#, status: .badRequest, param: "stop"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x", "stream_options": {"include_usage": true}}"#, status: .badRequest, param: "stream_options"),
        Case(uri: completions, body: #"{"model": "base", "prompt": []}"#, status: .badRequest, param: "prompt"),
        Case(uri: completions, body: #"{"model": "base", "prompt": [[1], "a"]}"#, status: .badRequest, param: "prompt"),
        Case(uri: completions, body: #"{"model": "base", "prompt": 5}"#, status: .badRequest, param: "prompt"),
        Case(uri: completions, body: #"{"model": "base"}"#, status: .badRequest, param: "prompt"),
        Case(uri: completions, body: #"{"prompt": "x"}"#, status: .badRequest, param: "model"),
        Case(uri: completions, body: #"{"model": "base", "prompt": "x""#, status: .badRequest, param: nil),
        Case(uri: completions, body: #"["model"]"#, status: .badRequest, param: nil),
        Case(uri: completions, body: #"{"model": "gpt-4", "prompt": "x"}"#, status: .notFound, param: "model", code: "model_not_found"),
        Case(uri: chat, body: #"{"model": "base", "messages": []}"#, status: .badRequest, param: "messages"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": 5, "content": "x"}]}"#, status: .badRequest, param: "messages[0].role"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": "user", "content": 5}]}"#, status: .badRequest, param: "messages[0].content"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": "user", "content": "x"}], "tools": {}}"#, status: .badRequest, param: "tools"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}"#,
             status: .badRequest, param: "tool_choice"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": "user", "content": "x"}], "continue_final_message": true}"#,
             status: .badRequest, param: "continue_final_message"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
             status: .badRequest, param: "messages[0].content"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": "user"}]}"#, status: .badRequest, param: "messages[0].content"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}"#,
             status: .badRequest, param: "top_logprobs"),
        Case(uri: chat, body: #"{"model": "base", "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 30}"#,
             status: .badRequest, param: "top_logprobs"),
        Case(uri: chat, body: #"{"model": "nope", "messages": [{"role": "user", "content": "x"}]}"#, status: .notFound, param: "model",
             code: "model_not_found"),
        Case(uri: "/v1/embeddings", body: "{}", status: .notFound, param: nil, code: "not_found"),
    ]

    @Test(arguments: cases) func invalidRequestIsRefusedNamingTheField(_ testCase: Case) async throws {
        let fake = FakeGenerationService()
        try await withServer(fake, configure: { $0.maxTokensLimit = 100 }) { client in
            try expectError(try await client.post(testCase.uri, testCase.body), testCase.status, param: testCase.param, code: testCase.code)
        }
        #expect(fake.submitted.isEmpty)
    }

    @Test func bodyOverTheLimitIs413() async throws {
        try await withServer(configure: { $0.maxBodyBytes = 100 }) { client in
            let body = #"{"model": "base", "prompt": "\#(String(repeating: "a", count: 200))"}"#
            let response = try await client.post("/v1/completions", body)
            try expectError(response, .contentTooLarge, param: nil, code: "body_too_large")
            #expect(response.headers[.connection] == "close", "the rest of the body is not read: the connection ends")
        }
    }

    /// Decoding errors speak of JSON fields and types, never of Swift's (`Int`, `DecodingError`, the decoder's text).
    @Test(arguments: [
        (#"{"model": "base", "prompt": "x", "max_tokens": "ten"}"#, "Invalid JSON body: `max_tokens` must be an integer"),
        (#"{"model": "base", "prompt": "x", "max_tokens": 1.5}"#, "Invalid JSON body: the body is not valid JSON, or a number in it does not fit its field"),
        (#"{"model": "base", "prompt": "x", "temperature": 1e999}"#, "Invalid JSON body: the body is not valid JSON, or a number in it does not fit its field"),
        (#"{"model": "base", "prompt": 5}"#,
         "Invalid JSON body: `prompt` must be a string, a list of strings, a list of token ids or a list of token-id lists"),
        (#"{"prompt": "x"}"#, "Invalid JSON body: `model` is required"),
        (#"{"model": "base", "prompt": "x""#, "Invalid JSON body: the body is not valid JSON, or a number in it does not fit its field"),
        (#"[1]"#, "Invalid JSON body: the body must be a JSON object"),
    ])
    func decodingErrorsSpeakJSON(_ body: String, _ message: String) async throws {
        try await withServer { client in
            let response = try await client.post("/v1/completions", body)
            #expect(response.status == .badRequest)
            let error = try #require(try response.json["error"] as? JSON)
            #expect(error["message"] as? String == message)
        }
    }

    @Test func fullQueueIs429() async throws {
        let fake = FakeGenerationService()
        fake.queueLimit = 0
        try await withServer(fake) { client in
            try expectError(try await client.post("/v1/completions", #"{"model": "base", "prompt": "x"}"#), .tooManyRequests, param: nil, code: "queue_full")
        }
    }

    @Test func rejectionsAreCountedInMetrics() async throws {
        try await withServer { client in
            _ = try await client.post("/v1/completions", #"{"model": "base", "prompt": "x", "n": 17}"#)
            _ = try await client.post("/v1/completions", #"{"model": "base", "prompt": "x", "max_tokens": 2}"#)
            let metrics = try await client.get("/metrics").text
            #expect(metrics.contains(#"punica_requests_total{outcome="rejected"} 1"#))
            #expect(metrics.contains(#"punica_requests_total{outcome="length"} 1"#))
        }
    }
}

@Suite struct AuthTests {
    @Test func apiKeyGuardsTheAPIButNotHealthOrMetrics() async throws {
        try await withServer(configure: { $0.apiKey = "sk-secret" }) { client in
            let body = #"{"model": "base", "prompt": "x", "max_tokens": 1}"#
            try expectError(try await client.post("/v1/completions", body), .unauthorized, param: nil, code: "invalid_api_key")
            try expectError(try await client.post("/v1/completions", body, headers: [.authorization: "Bearer sk-wrong"]), .unauthorized,
                            param: nil, code: "invalid_api_key")
            try expectError(try await client.get("/v1/models", headers: [.authorization: "sk-secret"]), .unauthorized, param: nil, code: "invalid_api_key")
            #expect(try await client.post("/v1/completions", body, headers: [.authorization: "Bearer sk-secret"]).status == .ok)
            #expect(try await client.get("/health").status == .ok)
            #expect(try await client.get("/metrics").status == .ok)
        }
    }
}

@Suite struct ModelListTests {
    @Test func listsTheBaseModelThenAdaptersWithTheirParent() async throws {
        try await withServer { client in
            let json = try await client.get("/v1/models").json
            #expect(json["object"] as? String == "list")
            let models = try #require(json["data"] as? [JSON])
            #expect(models.map { $0["id"] as? String } == ["base", "python", "scripture"])
            #expect(models.allSatisfy { $0["object"] as? String == "model" && $0["created"] is Int && $0["max_model_len"] as? Int == 64 })
            #expect(models[0]["parent"] is NSNull && models[0]["root"] as? String == "/models/base")
            #expect(models[1]["parent"] as? String == "base" && models[1]["root"] as? String == "/adapters/python")
        }
    }
}

@Suite struct MetricsTests {
    @Test func exposesCountersHistogramsAndEngineGauges() async throws {
        try await withServer { client in
            _ = try await client.post("/v1/completions", #"{"model": "python", "prompt": "x", "max_tokens": 3}"#)
            let response = try await client.get("/metrics")
            #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
            let lines = Set(response.text.split(separator: "\n").map(String.init))
            for expected in [
                "# TYPE punica_requests_total counter", #"punica_requests_total{outcome="length"} 1"#, #"punica_requests_total{outcome="cancelled"} 0"#,
                "punica_generation_tokens_total 3",
                "# TYPE punica_time_to_first_token_seconds histogram", #"punica_time_to_first_token_seconds_bucket{le="+Inf"} 1"#,
                "punica_time_to_first_token_seconds_count 1", "punica_inter_token_latency_seconds_count 2",
                "# TYPE punica_requests_running gauge", "punica_requests_running 2.0", "punica_requests_waiting 1.0",
                "punica_kv_pages_used 7.0", "punica_kv_pages_total 100.0",
                #"punica_adapter_requests{model="base"} 1.0"#, #"punica_adapter_requests{model="python"} 2.0"#, #"punica_adapter_requests{model="scripture"} 0.0"#,
                #"vllm:num_requests_running{model_name="base"} 2.0"#, #"vllm:kv_cache_usage_perc{model_name="base"} 0.07"#,
            ] {
                #expect(lines.contains(expected), "\(expected)")
            }
            #expect(lines.contains { $0.hasPrefix("# HELP punica_inter_token_latency_seconds ") })
        }
    }
}
