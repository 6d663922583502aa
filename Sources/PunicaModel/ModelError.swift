/// Everything that can be wrong with a model or adapter directory. Each message names the file, the field or
/// tensor, and what was expected.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case missingFile(path: String, expected: String)
    case malformed(path: String, reason: String)
    case unsupported(path: String, field: String, value: String, supported: String)
    case invalidValue(path: String, field: String, reason: String)
    case missingTensor(path: String, tensor: String)
    case unexpectedTensor(path: String, tensor: String, reason: String)
    case tensorShape(path: String, tensor: String, expected: [Int], actual: [Int])
    case tensorDType(path: String, tensor: String, dtype: String)
    /// An element breaks `rule` (a NaN weight, a LoRA value beyond its bound); `element` is its row-major index.
    case tensorValue(path: String, tensor: String, element: Int, value: Float, rule: String)

    public var description: String {
        switch self {
        case let .missingFile(path, expected):
            "\(path): not found (expected \(expected))"
        case let .malformed(path, reason):
            "\(path): malformed: \(reason)"
        case let .unsupported(path, field, value, supported):
            "\(path): \(field) \(value) is not supported (supported: \(supported))"
        case let .invalidValue(path, field, reason):
            "\(path): \(field) \(reason)"
        case let .missingTensor(path, tensor):
            "\(path): missing tensor '\(tensor)'"
        case let .unexpectedTensor(path, tensor, reason):
            "\(path): tensor '\(tensor)' \(reason)"
        case let .tensorShape(path, tensor, expected, actual):
            "\(path): tensor '\(tensor)' has shape \(actual), expected \(expected)"
        case let .tensorDType(path, tensor, dtype):
            "\(path): tensor '\(tensor)' has dtype \(dtype) (supported: F32, F16, BF16)"
        case let .tensorValue(path, tensor, element, value, rule):
            "\(path): tensor '\(tensor)' holds \(value) at element \(element) (\(rule))"
        }
    }
}
