/// Why a tokenizer could not be loaded. Every message names the file and, where there is one, the field.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    /// A required file does not exist; `path` is the full path that was looked for.
    case missingFile(path: String)
    /// Something other than a regular file (a directory, a FIFO, a device) is at `path`; it is not read.
    case notRegularFile(path: String)
    /// The file is not valid JSON, or a field has the wrong JSON type.
    case invalidJSON(file: String, detail: String)
    /// A field selects something this implementation does not do, e.g. `model.type` "WordPiece".
    case unsupported(file: String, field: String, value: String, supported: String)
    /// A field is well-formed but unusable, e.g. a merge of a token that is not in the vocabulary.
    case invalidValue(file: String, field: String, problem: String)

    public var description: String {
        switch self {
        case .missingFile(let path):
            return "\(path): file not found"
        case .notRegularFile(let path):
            return "\(path): not a regular file (a directory, FIFO or device is refused)"
        case .invalidJSON(let file, let detail):
            return "\(file): invalid JSON: \(detail)"
        case .unsupported(let file, let field, let value, let supported):
            return "\(file): \(field) \(value) is not supported (supported: \(supported))"
        case .invalidValue(let file, let field, let problem):
            return "\(file): \(field) \(problem)"
        }
    }
}
