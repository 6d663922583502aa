import Foundation
import HummingbirdTesting
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// Adapter directories for load tests: `root/` holds `good/`; `outside/evil/` is elsewhere, and `root/link` points to it.
struct AdapterTree {
    let base = FileManager.default.temporaryDirectory.appendingPathComponent("adapter-roots-\(UUID().uuidString)").path
    var root: String { base + "/root" }
    var outside: String { base + "/outside/evil" }

    init() throws {
        for directory in [root + "/good", outside] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: URL(fileURLWithPath: directory + "/adapter_config.json"))
        }
        try FileManager.default.createSymbolicLink(atPath: root + "/link", withDestinationPath: outside)
    }
}

@Suite struct AdapterRouteTests {
    func load(_ client: some TestClientProtocol, name: String, path: String) async throws -> TestResponse {
        try await client.post("/v1/load_lora_adapter", #"{"lora_name": "\#(name)", "lora_path": "\#(path)"}"#)
    }

    @Test func loadsFromInsideTheRootAndUnloads() async throws {
        let tree = try AdapterTree()
        let fake = FakeGenerationService()
        try await withServer(fake, configure: { $0.adapterRoots = [tree.root] }) { client in
            let loaded = try await load(client, name: "good", path: tree.root + "/./good")
            #expect(loaded.status == .ok && loaded.text == "Success: LoRA adapter 'good' added successfully.")
            let models = try #require(try await client.get("/v1/models").json["data"] as? [JSON])
            let good = try #require(models.first { $0["id"] as? String == "good" })
            #expect((good["root"] as? String)?.hasSuffix("/root/good") == true && good["parent"] as? String == "base")
            #expect(try await client.post("/v1/completions", #"{"model": "good", "prompt": "x", "max_tokens": 1}"#).status == .ok)

            // Again from the same directory: nothing changes; from another: refused.
            let again = try await load(client, name: "good", path: tree.root + "/good")
            #expect(again.status == .ok && again.text == "Success: LoRA adapter 'good' already loaded from that path.")
            try FileManager.default.createDirectory(atPath: tree.root + "/other", withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: URL(fileURLWithPath: tree.root + "/other/adapter_config.json"))
            try expectError(try await load(client, name: "good", path: tree.root + "/other"), .badRequest, param: "lora_name", code: "invalid_value")
            try expectError(try await load(client, name: "base", path: tree.root + "/good"), .badRequest, param: "lora_name", code: "invalid_value")
            try expectError(try await load(client, name: "a,b", path: tree.root + "/good"), .badRequest, param: "lora_name", code: "invalid_value")

            let unloaded = try await client.post("/v1/unload_lora_adapter", #"{"lora_name": "good"}"#)
            #expect(unloaded.status == .ok && unloaded.text == "Success: LoRA adapter 'good' removed successfully.")
            #expect(!fake.adapterNames().contains("good"))
            try expectError(try await client.post("/v1/completions", #"{"model": "good", "prompt": "x"}"#), .notFound, param: "model", code: "model_not_found")
        }
    }

    /// Outside the roots and missing read the same, but for the path the client sent: no answer tells whether a path
    /// outside the roots exists.
    @Test func pathsLeadingOutsideTheRootOrNowhereAreOneAnswer() async throws {
        let tree = try AdapterTree()
        let fake = FakeGenerationService()
        try await withServer(fake, configure: { $0.adapterRoots = [tree.root] }) { client in
            var messages: [String] = []
            for path in [tree.outside, tree.root + "/../outside/evil", tree.root + "/link", "/etc", tree.root + "/missing", tree.base + "/missing"] {
                let response = try await load(client, name: "evil", path: path)
                try expectError(response, .forbidden, param: "lora_path", code: "path_not_allowed")
                let message = try #require(try response.json["error"] as? JSON)["message"] as? String
                messages.append(try #require(message).replacing(path, with: "PATH"))
                #expect(message?.contains(tree.base) == path.hasPrefix(tree.base), "names no server path but the one sent: \(message ?? "")")
            }
            #expect(Set(messages).count == 1, "\(messages)")
            try expectError(try await load(client, name: "empty", path: tree.root), .badRequest, param: "lora_path", code: "invalid_value")
        }
        #expect(fake.adapterNames() == ["python", "scripture"])
    }

    /// Each file a load opens must resolve inside the roots, and be a regular file (a FIFO would hang the load).
    @Test func adapterFilesThatLeadOutsideTheRootOrAreNotRegularAreRefused() async throws {
        let tree = try AdapterTree()
        let sneaky = tree.root + "/sneaky", fifo = tree.root + "/fifo"
        for directory in [sneaky, fifo] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: URL(fileURLWithPath: directory + "/adapter_config.json"))
        }
        try FileManager.default.createSymbolicLink(atPath: sneaky + "/adapter_model.safetensors", withDestinationPath: tree.outside + "/adapter_config.json")
        #expect(mkfifo(fifo + "/adapter_model.safetensors", 0o600) == 0)
        let fake = FakeGenerationService()
        try await withServer(fake, configure: { $0.adapterRoots = [tree.root] }) { client in
            try expectError(try await load(client, name: "sneaky", path: sneaky), .forbidden, param: "lora_path", code: "path_not_allowed")
            try expectError(try await load(client, name: "fifo", path: fifo), .badRequest, param: "lora_path", code: "invalid_value")
        }
        #expect(fake.adapterNames() == ["python", "scripture"])
    }

    /// A load that fails names the directory as the client spelled it, never as the server resolved it.
    @Test func loadErrorsNameOnlyThePathTheClientSent() async throws {
        let tree = try AdapterTree()
        try FileManager.default.createDirectory(atPath: tree.root + "/bare", withIntermediateDirectories: true)
        try await withServer(configure: { $0.adapterRoots = [tree.root] }) { client in
            let response = try await load(client, name: "bare", path: tree.root + "/./bare")
            try expectError(response, .badRequest, param: "lora_path", code: "invalid_value")
            let message = try #require(try response.json["error"] as? JSON)["message"] as? String ?? ""
            #expect(message.contains(tree.root + "/./bare") && !message.contains(tree.root + "/bare"), "\(message)")
        }
    }

    @Test func baseModelNameMustBeTheServedModel() async throws {
        let tree = try AdapterTree()
        let fake = FakeGenerationService()
        try await withServer(fake, configure: { $0.adapterRoots = [tree.root] }) { client in
            let body = { (base: String) in #"{"lora_name": "good", "lora_path": "\#(tree.root)/good", "base_model_name": "\#(base)"}"# }
            let wrong = try await client.post("/v1/load_lora_adapter", body("llama-70b"))
            try expectError(wrong, .badRequest, param: "base_model_name", code: "invalid_value")
            let message = try #require(try wrong.json["error"] as? JSON)["message"] as? String ?? ""
            #expect(message.contains("llama-70b") && message.contains("\"base\""), "\(message)")
            #expect(!fake.adapterNames().contains("good"))
            #expect(try await client.post("/v1/load_lora_adapter", body("base")).status == .ok)
            #expect(fake.adapterNames().contains("good"))
        }
    }

    /// `--lora-filesystem-resolver`: an unknown `model` is loaded from `<root>/<model>` on its first request; names that
    /// are no directory there, or lead outside the root, stay unknown.
    @Test func unknownModelsResolveFromTheRootWhenAsked() async throws {
        let tree = try AdapterTree()
        let request = { (model: String) in #"{"model": "\#(model)", "prompt": "x", "max_tokens": 1}"# }
        let fake = FakeGenerationService()
        try await withServer(fake, configure: { $0.adapterRoots = [tree.root] }) { client in
            try expectError(try await client.post("/v1/completions", request("good")), .notFound, param: "model", code: "model_not_found")
        }
        #expect(!fake.adapterNames().contains("good"))
        try await withServer(fake, configure: { $0.adapterRoots = [tree.root]; $0.resolvesAdaptersFromRoots = true }) { client in
            #expect(try await client.post("/v1/completions", request("good")).status == .ok)
            #expect(fake.submitted.last?.adapter == "good")
            let models = try #require(try await client.get("/v1/models").json["data"] as? [JSON])
            #expect(models.contains { $0["id"] as? String == "good" && ($0["root"] as? String)?.hasSuffix("/root/good") == true })
            for unknown in ["link", "missing", "..", "good/..", "evil"] {
                try expectError(try await client.post("/v1/completions", request(unknown)), .notFound, param: "model", code: "model_not_found")
            }
            try FileManager.default.createDirectory(atPath: tree.root + "/bare", withIntermediateDirectories: true)
            let bare = try await client.post("/v1/completions", request("bare"))
            try expectError(bare, .badRequest, param: "model", code: "invalid_value")
            let message = try #require(try bare.json["error"] as? JSON)["message"] as? String ?? ""
            #expect(message.contains("<adapter root>/bare") && !message.contains(tree.base), "\(message)")
        }
        #expect(fake.adapterNames() == ["good", "python", "scripture"])
    }

    @Test func loadingIsOffWithoutRoots() async throws {
        let tree = try AdapterTree()
        try await withServer { client in
            try expectError(try await load(client, name: "good", path: tree.root + "/good"), .forbidden, param: "lora_path", code: "path_not_allowed")
        }
    }

    @Test func unloadRefusesUnknownAndBusyAdapters() async throws {
        let fake = FakeGenerationService()
        fake.busyAdapters = ["python"]
        try await withServer(fake) { client in
            try expectError(try await client.post("/v1/unload_lora_adapter", #"{"lora_name": "nope"}"#), .notFound, param: "lora_name", code: "adapter_not_found")
            try expectError(try await client.post("/v1/unload_lora_adapter", #"{"lora_name": "python"}"#), .conflict, param: "lora_name", code: "adapter_in_use")
        }
    }
}
