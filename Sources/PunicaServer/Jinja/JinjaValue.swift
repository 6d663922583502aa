#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A value inside a Jinja template, with Python's semantics (what jinja2 does in transformers): truthiness, `str()`,
/// `repr()`, `==`, ordering and arithmetic as Python defines them, so that a template renders the same text.
enum JinjaValue {
    /// A name or attribute that does not exist (jinja2's default `Undefined`): renders as "", is falsy, iterates as
    /// empty; using it in arithmetic or looking into it is an error with this message ("'x' is undefined").
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    case dict(JinjaDict)
    /// `namespace(...)` and `loop`: attributes that assignments can change.
    case namespace(JinjaNamespace)
    /// Macros, built-in functions and bound methods.
    case callable(JinjaCallable)

    var isUndefined: Bool { if case .undefined = self { true } else { false } }
    var isNone: Bool { if case .none = self { true } else { false } }

    /// Python's `bool()`.
    var truthy: Bool {
        switch self {
        case .undefined, .none: false
        case .bool(let value): value
        case .int(let value): value != 0
        case .double(let value): value != 0
        case .string(let value): !value.isEmpty
        case .list(let items): !items.isEmpty
        case .dict(let dict): !dict.entries.isEmpty
        case .namespace, .callable: true
        }
    }

    /// Python's type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: "Undefined"
        case .none: "NoneType"
        case .bool: "bool"
        case .int: "int"
        case .double: "float"
        case .string: "str"
        case .list: "list"
        case .dict: "dict"
        case .namespace: "Namespace"
        case .callable: "function"
        }
    }

    /// Python's `str()`, which is what `{{ value }}` renders.
    var text: String {
        switch self {
        case .undefined: ""
        case .string(let value): value
        default: repr
        }
    }

    /// Python's `repr()`.
    var repr: String {
        switch self {
        case .undefined: ""
        case .none: "None"
        case .bool(let value): value ? "True" : "False"
        case .int(let value): String(value)
        case .double(let value): pythonFloat(value)
        case .string(let value): pythonRepr(value)
        case .list(let items): "[" + items.map(\.repr).joined(separator: ", ") + "]"
        case .dict(let dict): "{" + dict.entries.map { "\($0.key.repr): \($0.value.repr)" }.joined(separator: ", ") + "}"
        case .namespace(let namespace): "<Namespace " + JinjaValue.dict(namespace.attributes).repr + ">"
        case .callable(let function): "<function \(function.name)>"
        }
    }

    /// A number as Python sees it (bool is an int), or nil.
    var number: Double? {
        switch self {
        case .bool(let value): value ? 1 : 0
        case .int(let value): Double(value)
        case .double(let value): value
        default: nil
        }
    }

    /// An integer as Python sees it (bool included), or nil.
    var integer: Int? {
        switch self {
        case .bool(let value): value ? 1 : 0
        case .int(let value): value
        default: nil
        }
    }

    /// Python's `==`.
    static func equal(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(x), .string(y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case let (.list(x), .list(y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case let (.dict(x), .dict(y)):
            return x.entries.count == y.entries.count && x.entries.allSatisfy { entry in y[entry.key].map { equal($0, entry.value) } ?? false }
        case let (.namespace(x), .namespace(y)): return x === y
        case let (.callable(x), .callable(y)): return x === y
        default:
            if let x = a.number, let y = b.number { return x == y }
            return false
        }
    }

    /// Python's `<` (and, swapped, `>`): numbers, strings by code point, lists element by element.
    static func less(_ a: JinjaValue, _ b: JinjaValue, _ op: String) throws -> Bool {
        switch (a, b) {
        case let (.string(x), .string(y)): return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars)
        case let (.list(x), .list(y)):
            for (p, q) in zip(x, y) where !equal(p, q) { return try less(p, q, op) }
            return x.count < y.count
        default:
            if let x = a.number, let y = b.number { return x < y }
            if case .undefined(let what) = a { throw JinjaError.undefined(what) }
            if case .undefined(let what) = b { throw JinjaError.undefined(what) }
            throw JinjaError.runtime("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
        }
    }

    /// The items a `for` loop (or `list`) goes through: a list's items, a dict's keys, a string's characters.
    func iterated() throws -> [JinjaValue] {
        switch self {
        case .undefined: return []
        case .list(let items): return items
        case .dict(let dict): return dict.entries.map(\.key)
        case .string(let value): return value.unicodeScalars.map { .string(String($0)) }
        default: throw JinjaError.runtime("'\(typeName)' object is not iterable")
        }
    }
}

/// A dict that keeps insertion order, as Python's does (it decides the order `tojson` and `items()` use).
struct JinjaDict {
    var entries: [(key: JinjaValue, value: JinjaValue)] = []

    init(_ entries: [(key: JinjaValue, value: JinjaValue)] = []) {
        for entry in entries { self[entry.key] = entry.value }
    }

    subscript(key: JinjaValue) -> JinjaValue? {
        get { entries.first { JinjaValue.equal($0.key, key) }?.value }
        set {
            if let index = entries.firstIndex(where: { JinjaValue.equal($0.key, key) }) {
                if let newValue { entries[index].value = newValue } else { entries.remove(at: index) }
            } else if let newValue {
                entries.append((key, newValue))
            }
        }
    }

    subscript(key: String) -> JinjaValue? {
        get { self[.string(key)] }
        set { self[.string(key)] = newValue }
    }
}

/// `namespace()` objects and `loop`: shared by reference, so `{% set ns.x = … %}` inside a loop is seen after it.
final class JinjaNamespace {
    var attributes: JinjaDict
    init(_ attributes: JinjaDict) { self.attributes = attributes }
}

/// Something a template can call: `(positional arguments, keyword arguments) -> value`.
final class JinjaCallable {
    let name: String
    let call: ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue
    init(_ name: String, _ call: @escaping ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue) {
        self.name = name
        self.call = call
    }
}

/// Python's `repr()` of a string: single quotes unless the text has one and no double quote.
func pythonRepr(_ text: String) -> String {
    let quote: Character = text.contains("'") && !text.contains("\"") ? "\"" : "'"
    var out = String(quote)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if Character(scalar) == quote {
                out += "\\" + String(scalar)
            } else if scalar.value < 0x20 || scalar.value == 0x7F {
                out += "\\x" + hex(scalar.value, digits: 2)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    out.append(quote)
    return out
}

/// Python's `repr()` of a float: the shortest text that reads back the same, always with a "." or an exponent.
func pythonFloat(_ value: Double) -> String {
    if value.isNaN { return "nan" }
    if value.isInfinite { return value < 0 ? "-inf" : "inf" }
    // Swift's description is also the shortest round-trip form, and switches to exponents where Python does (1e16, 1e-05).
    return value.description
}

func hex(_ value: UInt32, digits: Int) -> String {
    let text = String(value, radix: 16)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
}

extension JinjaValue {
    /// Python's `json.dumps(value, ensure_ascii, indent, separators, sort_keys)`, as transformers' `tojson` filter
    /// calls it (ensure_ascii false by default).
    func json(indent: String?, itemSeparator: String? = nil, keySeparator: String = ": ", sortKeys: Bool = false,
              ensureASCII: Bool = false) throws -> String {
        var out = ""
        let itemSeparator = itemSeparator ?? (indent == nil ? ", " : ",")
        func write(_ value: JinjaValue, depth: Int) throws {
            func newline(_ depth: Int) { if let indent { out += "\n" + String(repeating: indent, count: depth) } }
            switch value {
            case .none: out += "null"
            case .bool(let flag): out += flag ? "true" : "false"
            case .int(let number): out += String(number)
            case .double(let number):
                out += number.isNaN ? "NaN" : number.isInfinite ? (number < 0 ? "-Infinity" : "Infinity") : pythonFloat(number)
            case .string(let text): out += jsonString(text, ensureASCII: ensureASCII)
            case .list(let items):
                guard !items.isEmpty else { out += "[]"; return }
                out += "["
                for (index, item) in items.enumerated() {
                    if index > 0 { out += itemSeparator }
                    newline(depth + 1)
                    try write(item, depth: depth + 1)
                }
                newline(depth)
                out += "]"
            case .dict(let dict):
                guard !dict.entries.isEmpty else { out += "{}"; return }
                var entries = try dict.entries.map { (key: try jsonKey($0.key), value: $0.value) }
                if sortKeys { entries.sort { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) } }
                out += "{"
                for (index, entry) in entries.enumerated() {
                    if index > 0 { out += itemSeparator }
                    newline(depth + 1)
                    out += jsonString(entry.key, ensureASCII: ensureASCII) + keySeparator
                    try write(entry.value, depth: depth + 1)
                }
                newline(depth)
                out += "}"
            case .undefined, .namespace, .callable:
                throw JinjaError.runtime("Object of type \(value.typeName) is not JSON serializable")
            }
        }
        try write(self, depth: 0)
        return out
    }

    /// JSON keys: strings as they are, numbers, bools and None as json.dumps converts them.
    private func jsonKey(_ key: JinjaValue) throws -> String {
        switch key {
        case .string(let text): return text
        case .none: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .int(let number): return String(number)
        case .double(let number): return pythonFloat(number)
        default: throw JinjaError.runtime("keys must be str, int, float, bool or None, not \(key.typeName)")
        }
    }
}

/// A JSON string literal as Python's json module writes it.
private func jsonString(_ text: String, ensureASCII: Bool) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        default:
            if scalar.value < 0x20 {
                out += "\\u" + hex(scalar.value, digits: 4)
            } else if ensureASCII && scalar.value > 0x7E {
                if scalar.value > 0xFFFF {
                    let value = scalar.value - 0x10000
                    out += "\\u" + hex(0xD800 + (value >> 10), digits: 4) + "\\u" + hex(0xDC00 + (value & 0x3FF), digits: 4)
                } else {
                    out += "\\u" + hex(scalar.value, digits: 4)
                }
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

/// Reads JSON text into template values keeping the order of object keys (Foundation's parsers lose it, and
/// `tojson` of a tool's schema must list its fields as the client sent them). Numbers without a fraction or exponent
/// are ints, as in Python.
struct OrderedJSON {
    private let bytes: [UInt8]
    private var position = 0

    static func parse(_ data: Data) throws -> JinjaValue {
        var parser = OrderedJSON(bytes: Array(data))
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.position == parser.bytes.count else { throw parser.error("unexpected text after the JSON value") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func error(_ message: String) -> JinjaError { .runtime("invalid JSON at byte \(position): \(message)") }

    private mutating func skipSpace() {
        while position < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[position]) { position += 1 }
    }

    private mutating func expect(_ literal: String) throws {
        let expected = Array(literal.utf8)
        guard bytes.count - position >= expected.count, Array(bytes[position ..< position + expected.count]) == expected else {
            throw error("expected \(literal)")
        }
        position += expected.count
    }

    private mutating func value(depth: Int) throws -> JinjaValue {
        guard depth < 512 else { throw error("nested too deeply") }
        guard position < bytes.count else { throw error("unexpected end") }
        switch bytes[position] {
        case UInt8(ascii: "{"):
            position += 1
            var dict = JinjaDict()
            skipSpace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") { position += 1; return .dict(dict) }
            while true {
                skipSpace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw error("expected a string key") }
                let key = try string()
                skipSpace()
                try expect(":")
                skipSpace()
                dict[key] = try value(depth: depth + 1)
                skipSpace()
                guard position < bytes.count else { throw error("unexpected end") }
                position += 1
                if bytes[position - 1] == UInt8(ascii: "}") { return .dict(dict) }
                guard bytes[position - 1] == UInt8(ascii: ",") else { throw error("expected , or }") }
            }
        case UInt8(ascii: "["):
            position += 1
            var items: [JinjaValue] = []
            skipSpace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") { position += 1; return .list(items) }
            while true {
                skipSpace()
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard position < bytes.count else { throw error("unexpected end") }
                position += 1
                if bytes[position - 1] == UInt8(ascii: "]") { return .list(items) }
                guard bytes[position - 1] == UInt8(ascii: ",") else { throw error("expected , or ]") }
            }
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .none
        default: return try number()
        }
    }

    private mutating func number() throws -> JinjaValue {
        let start = position
        var isInteger = true
        while position < bytes.count, "+-0123456789.eE".utf8.contains(bytes[position]) {
            if "eE.".utf8.contains(bytes[position]) { isInteger = false }
            position += 1
        }
        let text = String(decoding: bytes[start ..< position], as: UTF8.self)
        if isInteger, let integer = Int(text) { return .int(integer) }
        guard !text.isEmpty, let double = Double(text) else { throw error("expected a value") }
        return .double(double)
    }

    private mutating func string() throws -> String {
        position += 1  // the opening quote
        var scalars = String.UnicodeScalarView()
        var run = position
        func flush(_ end: Int) { scalars.append(contentsOf: String(decoding: bytes[run ..< end], as: UTF8.self).unicodeScalars) }
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                flush(position)
                position += 1
                return String(scalars)
            }
            guard byte == UInt8(ascii: "\\") else { position += 1; continue }
            flush(position)
            guard position + 1 < bytes.count else { break }
            let escape = bytes[position + 1]
            position += 2
            switch escape {
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "/"), UInt8(ascii: "\\"), UInt8(ascii: "\""): scalars.append(Unicode.Scalar(escape))
            case UInt8(ascii: "u"):
                var code = try hex4()
                if (0xD800..<0xDC00).contains(code), bytes.count - position >= 6, bytes[position] == UInt8(ascii: "\\"),
                   bytes[position + 1] == UInt8(ascii: "u") {
                    position += 2
                    let low = try hex4()
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                }
                scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
            default: throw error("invalid escape")
            }
            run = position
        }
        throw error("unterminated string")
    }

    private mutating func hex4() throws -> UInt32 {
        guard bytes.count - position >= 4, let code = UInt32(String(decoding: bytes[position ..< position + 4], as: UTF8.self), radix: 16) else {
            throw error("invalid \\u escape")
        }
        position += 4
        return code
    }
}
