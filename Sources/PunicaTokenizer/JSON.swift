#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A parsed JSON value, for the small, heterogeneous parts of the config files (normalizer, pre_tokenizer,
/// decoder, post_processor, tokenizer_config.json, generation_config.json).
enum JSONValue: Decodable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        // Strings first: they are by far the most common leaf in these files.
        if container.decodeNil() {
            self = .null
        } else if let string = try? container.decode(String.self) {
            self = .string(string)
        } else if let bool = try? container.decode(Bool.self) {
            self = .bool(bool)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let array = try? container.decode([JSONValue].self) {
            self = .array(array)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }
}

extension JSONValue: CustomStringConvertible {
    /// Compact JSON text, for error messages.
    var description: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return String(value)
        case .number(let value): return value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
        case .string(let value): return "\"\(value)\""
        case .array(let values): return "[" + values.map(\.description).joined(separator: ",") + "]"
        case .object(let members):
            return "{" + members.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}"
        }
    }
}

/// A JSON value together with the file and field it came from, so that every error can name both
/// (e.g. `tokenizer.json: pre_tokenizer.pretokenizers[1].type "Digits" is not supported (...)`).
/// A missing member reads as `null`.
struct JSONField {
    let value: JSONValue
    let file: String
    let path: String

    subscript(key: String) -> JSONField {
        var member = JSONValue.null
        if case .object(let members) = value { member = members[key] ?? .null }
        return JSONField(value: member, file: file, path: path.isEmpty ? key : "\(path).\(key)")
    }

    var isNull: Bool {
        if case .null = value { return true }
        return false
    }

    func string() throws -> String {
        guard case .string(let string) = value else { throw invalid("must be a string (found \(value))") }
        return string
    }

    /// `nil` when the field is missing or `null`.
    func optionalString() throws -> String? {
        isNull ? nil : try string()
    }

    func bool(default defaultValue: Bool) throws -> Bool {
        switch value {
        case .null: return defaultValue
        case .bool(let bool): return bool
        default: throw invalid("must be true or false (found \(value))")
        }
    }

    func int() throws -> Int {
        guard case .number(let number) = value, let int = Int(exactly: number) else {
            throw invalid("must be an integer (found \(value))")
        }
        return int
    }

    /// `nil` when the field is missing or `null`.
    func optionalInt() throws -> Int? {
        isNull ? nil : try int()
    }

    func array() throws -> [JSONField] {
        guard case .array(let values) = value else { throw invalid("must be an array (found \(value))") }
        return values.indices.map { JSONField(value: values[$0], file: file, path: "\(path)[\($0)]") }
    }

    /// A value that must be exactly one Unicode scalar, such as the `replacement` of Metaspace.
    func scalar() throws -> Unicode.Scalar {
        let string = try string()
        guard string.unicodeScalars.count == 1, let scalar = string.unicodeScalars.first else {
            throw invalid("must be a single character (found \(value))")
        }
        return scalar
    }

    func invalid(_ problem: String) -> TokenizerError {
        .invalidValue(file: file, field: path, problem: problem)
    }

    func unsupported(supported: String) -> TokenizerError {
        .unsupported(file: file, field: path, value: value.description, supported: supported)
    }
}

/// Decodes one of the tokenizer files, turning decoding failures into `TokenizerError.invalidJSON`
/// that names the file and, for a mistyped field, the field.
func decodeJSON<T: Decodable>(_ type: T.Type, from data: Data, file: String) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch let error as DecodingError {
        throw TokenizerError.invalidJSON(file: file, detail: describe(error))
    }
}

/// Reads a whole file as a `JSONField` rooted at the file.
func decodeJSONField(from data: Data, file: String) throws -> JSONField {
    JSONField(value: try decodeJSON(JSONValue.self, from: data, file: file), file: file, path: "")
}

/// "model.merges[3]" for a decoding path.
private func fieldPath(_ codingPath: [CodingKey]) -> String {
    var path = ""
    for key in codingPath {
        if let index = key.intValue {
            path += "[\(index)]"
        } else {
            path += path.isEmpty ? key.stringValue : ".\(key.stringValue)"
        }
    }
    return path
}

private func describe(_ error: DecodingError) -> String {
    switch error {
    case .dataCorrupted(let context) where context.codingPath.isEmpty:
        let underlying = context.underlyingError.map { " (\($0))" } ?? ""
        return context.debugDescription + underlying
    case .dataCorrupted(let context), .typeMismatch(_, let context), .valueNotFound(_, let context):
        return "\(fieldPath(context.codingPath)): \(context.debugDescription)"
    case .keyNotFound(let key, let context):
        return "\(fieldPath(context.codingPath + [key])) is missing"
    @unknown default:
        return "\(error)"
    }
}
