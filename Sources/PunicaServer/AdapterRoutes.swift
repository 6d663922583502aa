#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Hummingbird
import PunicaEngine

/// Directories adapters may be loaded from at run time. Paths are compared after resolving symlinks and `..`, so no
/// spelling of a path leads outside them, and every file a load opens is resolved the same way.
struct AdapterRoots: Sendable {
    let directories: [String]

    /// The files of a PEFT adapter directory that a load opens (or looks at).
    static let adapterFiles = ["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"]

    init(_ paths: [String]) throws(ServerSetupError) {
        directories = try paths.map { (path) throws(ServerSetupError) in
            guard let resolved = canonicalPath(path), isDirectory(resolved) else { throw .adapterRootNotFound(path) }
            return resolved
        }
    }

    /// The canonical form of the directory `path`, which must lie in one of the roots, as must each of its
    /// `adapterFiles` that exists (a symlink to a file elsewhere is refused) and be a regular file.
    func resolve(_ path: String) throws(APIError) -> String {
        let notAllowed = APIError.pathNotAllowed(path, rootsConfigured: !directories.isEmpty)
        guard let directory = canonicalPath(path), contains(directory), isDirectory(directory) else { throw notAllowed }
        for name in Self.adapterFiles {
            let file = directory + "/" + name
            var entry = stat()
            guard lstat(file, &entry) == 0 else { continue }  // missing: the loader says which file it needs
            guard let resolved = canonicalPath(file), contains(resolved) else { throw notAllowed }
            guard stat(resolved, &entry) == 0, entry.st_mode & S_IFMT == S_IFREG else {
                throw .invalid(param: "lora_path", message: "`lora_path` \(path): \(name) is not a regular file")
            }
        }
        return directory
    }

    private func contains(_ resolved: String) -> Bool {
        directories.contains { resolved == $0 || resolved.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }
    }

    /// `message` with the server's own spelling of `directory` (resolved, absolute) replaced by the client's `path`,
    /// and the roots by a placeholder: error bodies name no server path the client did not send.
    func redacted(_ message: String, directory: String, as path: String) -> String {
        directories.reduce(message.replacing(directory, with: path)) { $0.replacing($1, with: "<adapter root>") }
    }
}

/// `path` with symlinks, `.` and `..` resolved; nil when it does not exist.
private func canonicalPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}

private func isDirectory(_ path: String) -> Bool {
    var entry = stat()
    return stat(path, &entry) == 0 && entry.st_mode & S_IFMT == S_IFDIR
}

/// Where each adapter was loaded from, for /v1/models (the engine keeps only what it needs to load them).
actor AdapterDirectories {
    private var byName: [String: String]

    init(_ byName: [String: String]) {
        self.byName = byName
    }

    func directory(of name: String) -> String? { byName[name] }

    func set(_ name: String, _ directory: String?) { byName[name] = directory }
}

extension OpenAIServer {
    /// `GET /v1/models`: the base model, then every adapter with the base model as its parent.
    func listModels() async -> Response {
        let created = unixTime()
        let context = service.maxContextLength
        var models = [ModelList.Model(id: configuration.servedModelName, created: created, root: configuration.modelDirectory,
                                      parent: nil, max_model_len: context)]
        for name in service.adapterNames() {
            models.append(.init(id: name, created: created, root: await adapterDirectories.directory(of: name) ?? name,
                                parent: configuration.servedModelName, max_model_len: context))
        }
        return jsonResponse(ModelList(data: models))
    }

    /// `POST /v1/load_lora_adapter` `{"lora_name", "lora_path", "base_model_name"?}`: registers an adapter from inside
    /// the adapter roots. Loading a name again from the same directory succeeds and changes nothing, so a controller
    /// rolling adapters out can repeat it.
    func loadAdapter(_ request: Request) async throws -> Response {
        var request = request
        let body = try await decodeBody(LoadAdapterRequest.self, from: &request)
        let name = body.lora_name
        // No comma: routers read the adapter lists of /metrics as comma-separated names.
        guard !name.isEmpty, name != configuration.servedModelName, !name.contains(",") else {
            throw APIError.invalid(param: "lora_name", message: "`lora_name` must be non-empty, without commas, and not the base model's name. Given: \"\(name)\"")
        }
        if let base = body.base_model_name, base != configuration.servedModelName {
            throw APIError.invalid(param: "base_model_name",
                                   message: "`base_model_name` \"\(base)\" is not the served model: this server serves \"\(configuration.servedModelName)\"")
        }
        let added = try await register(name, path: body.lora_path, param: "lora_path")
        let outcome = added ? "added successfully" : "already loaded from that path"
        return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "Success: LoRA adapter '\(name)' \(outcome).")))
    }

    /// vLLM's filesystem LoRA resolver: a `model` that is neither the base model nor a registered adapter, but names a
    /// directory `<adapter root>/<model>`, is registered from there on its first request (`--lora-filesystem-resolver`).
    /// False when no root has such a directory (or resolving is off).
    func resolveAdapter(_ name: String) async throws -> Bool {
        guard configuration.resolvesAdaptersFromRoots, !name.isEmpty, name != ".", name != "..", !name.contains("/"),
              !name.contains(",") else { return false }
        // A directory that leads outside the roots is no adapter to resolve.
        guard let root = adapterRoots.directories.first(where: { isDirectory($0 + "/" + name) && (try? adapterRoots.resolve($0 + "/" + name)) != nil })
        else { return false }
        _ = try await register(name, path: root + "/" + name, shownAs: "<adapter root>/\(name)", param: "model")
        return true
    }

    /// Registers the adapter directory `path` (inside the roots) as `name`; false when `name` is registered from that
    /// directory already. Errors call the directory `shownAs` and name `param` as the field at fault.
    private func register(_ name: String, path: String, shownAs: String? = nil, param: String) async throws -> Bool {
        let shown = shownAs ?? path
        let directory = try adapterRoots.resolve(path)
        if service.adapterNames().contains(name) {
            guard let existing = await adapterDirectories.directory(of: name), canonicalPath(existing) == directory else {
                throw APIError.invalid(param: "lora_name", message: "The LoRA adapter `\(name)` is already loaded from another path; unload it first.")
            }
            return false
        }
        do {
            try await service.registerAdapter(name: name, directory: directory)
        } catch let error as RequestError {
            throw error
        } catch {
            // Anything else is the directory's fault: missing files, or weights that do not fit the model.
            let reason = adapterRoots.redacted(String(describing: error), directory: directory, as: shown)
            throw APIError.invalid(param: param, message: "Cannot load the LoRA adapter at \(shown): \(reason)")
        }
        await adapterDirectories.set(name, directory)
        logger.info("loaded LoRA adapter \(name) from \(directory)")
        return true
    }

    /// `POST /v1/unload_lora_adapter` `{"lora_name"}`: refused while requests use it.
    func unloadAdapter(_ request: Request) async throws -> Response {
        var request = request
        let name = try await decodeBody(UnloadAdapterRequest.self, from: &request).lora_name
        guard service.adapterNames().contains(name) else { throw APIError.adapterNotFound(name) }
        try await service.unregisterAdapter(name: name)
        await adapterDirectories.set(name, nil)
        logger.info("unloaded LoRA adapter \(name)")
        return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "Success: LoRA adapter '\(name)' removed successfully.")))
    }
}
