#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The operators, filters, tests, globals and methods (of str, dict and list) templates use, each as jinja2 and
/// Python define it.
enum JinjaBuiltins {
    struct Arguments {
        var positional: [JinjaValue] = []
        var keywords: [(String, JinjaValue)] = []

        /// The arguments for parameters `names`, by position or keyword; nil where not given.
        func bind(_ names: [String], of function: String) throws -> [JinjaValue?] {
            guard positional.count <= names.count else {
                throw JinjaError.runtime("\(function)() takes at most \(names.count) arguments (\(positional.count) given)")
            }
            var bound: [JinjaValue?] = positional.map { $0 } + Array(repeating: nil, count: names.count - positional.count)
            for (name, value) in keywords {
                guard let index = names.firstIndex(of: name) else { throw JinjaError.runtime("\(function)() got an unexpected keyword argument '\(name)'") }
                guard bound[index] == nil else { throw JinjaError.runtime("\(function)() got multiple values for argument '\(name)'") }
                bound[index] = value
            }
            return bound
        }
    }

    // MARK: Globals

    static func globals(now: Date, timeZone: TimeZone) -> [String: JinjaValue] {
        func function(_ name: String, _ body: @escaping (Arguments) throws -> JinjaValue) -> JinjaValue {
            .callable(JinjaCallable(name) { try body(Arguments(positional: $0, keywords: $1)) })
        }
        return [
            "raise_exception": function("raise_exception") { arguments in
                let message = try arguments.bind(["message"], of: "raise_exception")[0] ?? .string("")
                throw JinjaError(kind: .raised, message: message.text)
            },
            "strftime_now": function("strftime_now") { arguments in
                guard case .string(let format)? = try arguments.bind(["format"], of: "strftime_now")[0] else {
                    throw JinjaError.runtime("strftime_now() takes a format string")
                }
                return .string(try strftime(format, now, timeZone))
            },
            "namespace": function("namespace") { arguments in
                var attributes = JinjaDict()
                for value in arguments.positional {
                    guard case .dict(let dict) = value else { throw JinjaError.runtime("namespace() takes a dict or keyword arguments") }
                    for entry in dict.entries { attributes[entry.key] = entry.value }
                }
                for (name, value) in arguments.keywords { attributes[name] = value }
                return .namespace(JinjaNamespace(attributes))
            },
            "dict": function("dict") { arguments in
                var dict = JinjaDict()
                for value in arguments.positional {
                    guard case .dict(let other) = value else { throw JinjaError.runtime("dict() takes a dict or keyword arguments") }
                    for entry in other.entries { dict[entry.key] = entry.value }
                }
                for (name, value) in arguments.keywords { dict[name] = value }
                return .dict(dict)
            },
            "range": function("range") { arguments in
                let bounds = try arguments.positional.map { value -> Int in
                    guard let integer = value.integer else { throw JinjaError.runtime("range() takes integers, not '\(value.typeName)'") }
                    return integer
                }
                let (start, stop, step) = switch bounds.count {
                case 1: (0, bounds[0], 1)
                case 2: (bounds[0], bounds[1], 1)
                case 3: (bounds[0], bounds[1], bounds[2])
                default: throw JinjaError.runtime("range() takes 1 to 3 integers")
                }
                guard step != 0 else { throw JinjaError.runtime("range() arg 3 must not be zero") }
                // jinja2's sandbox limit (counted in Double: extreme bounds must not overflow).
                let count = max(0, ((Double(stop) - Double(start)) / Double(step)).rounded(.up))
                guard count <= 100_000 else { throw JinjaError.runtime("range() of more than 100000 items is not allowed") }
                return .list((0..<Int(count)).map { .int(start + $0 * step) })
            },
        ]
    }

    /// Python's `datetime.strftime` for the directives chat templates use.
    static func strftime(_ format: String, _ date: Date, _ timeZone: TimeZone) throws -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
        let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        func padded(_ value: Int, _ width: Int = 2) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let month = parts.month! - 1, weekday = parts.weekday! - 1, hour = parts.hour!
        var out = ""
        var scalars = format.unicodeScalars.makeIterator()
        while let scalar = scalars.next() {
            guard scalar == "%" else { out.unicodeScalars.append(scalar); continue }
            guard var directive = scalars.next() else { throw JinjaError.runtime("strftime_now: the format ends with %") }
            // glibc's "%-d": no padding.
            let unpadded = directive == "-"
            if unpadded {
                guard let next = scalars.next() else { throw JinjaError.runtime("strftime_now: the format ends with %-") }
                directive = next
            }
            func number(_ value: Int, _ width: Int = 2) -> String { unpadded ? String(value) : padded(value, width) }
            switch directive {
            case "d": out += number(parts.day!)
            case "m": out += number(month + 1)
            case "Y": out += String(parts.year!)
            case "y": out += number(parts.year! % 100)
            case "b": out += String(months[month].prefix(3))
            case "B": out += months[month]
            case "a": out += String(days[weekday].prefix(3))
            case "A": out += days[weekday]
            case "H": out += number(hour)
            case "I": out += number(hour % 12 == 0 ? 12 : hour % 12)
            case "p": out += hour < 12 ? "AM" : "PM"
            case "M": out += number(parts.minute!)
            case "S": out += number(parts.second!)
            case "j":
                let newYear = calendar.date(from: DateComponents(year: parts.year!, month: 1, day: 1)) ?? date
                out += number((calendar.dateComponents([.day], from: newYear, to: date).day ?? 0) + 1, 3)
            case "%": out += "%"
            default: throw JinjaError.runtime("strftime_now: unsupported directive %\(directive)")
            }
        }
        return out
    }

    // MARK: Operators

    static func negate(_ value: JinjaValue, _ op: String) throws -> JinjaValue {
        switch value {
        case .int(let integer): return .int(op == "-" ? 0 &- integer : integer)
        case .bool(let flag): return .int(op == "-" ? (flag ? -1 : 0) : (flag ? 1 : 0))
        case .double(let number): return .double(op == "-" ? -number : number)
        case .undefined(let message): throw JinjaError.undefined(message)
        default: throw JinjaError.runtime("bad operand type for unary \(op): '\(value.typeName)'")
        }
    }

    static func arithmetic(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        if case .undefined(let message) = a { throw JinjaError.undefined(message) }
        if case .undefined(let message) = b { throw JinjaError.undefined(message) }
        func unsupported() -> JinjaError {
            .runtime("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        switch (op, a, b) {
        case let ("+", .string(x), .string(y)): return .string(x + y)
        case ("+", .string, _): throw JinjaError.runtime("can only concatenate str (not \"\(b.typeName)\") to str")
        case let ("+", .list(x), .list(y)): return .list(x + y)
        case ("+", .list, _): throw JinjaError.runtime("can only concatenate list (not \"\(b.typeName)\") to list")
        case let ("*", .string(text), _) where b.integer != nil: return .string(String(repeating: text, count: try repetitions(b.integer!, text.unicodeScalars.count)))
        case let ("*", _, .string(text)) where a.integer != nil: return .string(String(repeating: text, count: try repetitions(a.integer!, text.unicodeScalars.count)))
        case let ("*", .list(items), _) where b.integer != nil: return .list(Array(repeating: items, count: try repetitions(b.integer!, items.count)).flatMap { $0 })
        default: break
        }
        if let x = a.integer, let y = b.integer {
            switch op {
            case "+": return .int(x &+ y)
            case "-": return .int(x &- y)
            case "*": return .int(x &* y)
            case "/":
                guard y != 0 else { throw JinjaError.runtime("division by zero") }
                return .double(Double(x) / Double(y))
            case "//", "%":
                guard y != 0 else { throw JinjaError.runtime("integer division or modulo by zero") }
                guard !(x == .min && y == -1) else { throw JinjaError.runtime("integer overflow in \(op)") }
                // Python floors toward negative infinity; the remainder takes the divisor's sign.
                var quotient = x / y
                if (x % y != 0) && ((x < 0) != (y < 0)) { quotient -= 1 }
                return .int(op == "//" ? quotient : x - quotient * y)
            case "**":
                guard y >= 0 else { return .double(pow(Double(x), Double(y))) }
                // By squaring: a huge exponent takes 64 steps, not forever (the result wraps, where Python's grows).
                var (result, base, exponent) = (1, x, y)
                while exponent > 0 {
                    if exponent & 1 == 1 { result = result &* base }
                    base = base &* base
                    exponent >>= 1
                }
                return .int(result)
            default: throw unsupported()
            }
        }
        guard let x = a.number, let y = b.number else { throw unsupported() }
        switch op {
        case "+": return .double(x + y)
        case "-": return .double(x - y)
        case "*": return .double(x * y)
        case "/", "//", "%":
            guard y != 0 else { throw JinjaError.runtime("float division by zero") }
            if op == "/" { return .double(x / y) }
            let quotient = (x / y).rounded(.down)
            return .double(op == "//" ? quotient : x - quotient * y)
        case "**": return .double(pow(x, y))
        default: throw unsupported()
        }
    }

    /// `text * count` and `list * count` make at most this many items: a template cannot exhaust memory this way.
    private static func repetitions(_ count: Int, _ length: Int) throws -> Int {
        guard count > 0 else { return 0 }
        guard length == 0 || count <= (1 << 24) / length else { throw JinjaError.runtime("repetition of more than \(1 << 24) items is not allowed") }
        return count
    }

    static func compare(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> Bool {
        switch op {
        case "==": return JinjaValue.equal(a, b)
        case "!=": return !JinjaValue.equal(a, b)
        case "<": return try JinjaValue.less(a, b, op)
        case ">": return try JinjaValue.less(b, a, op)
        case "<=": return try !JinjaValue.less(b, a, op)
        case ">=": return try !JinjaValue.less(a, b, op)
        case "in": return try contains(b, a)
        case "not in": return try !contains(b, a)
        default: throw JinjaError.runtime("unknown comparison \(op)")
        }
    }

    /// Python's `element in container`.
    static func contains(_ container: JinjaValue, _ element: JinjaValue) throws -> Bool {
        switch container {
        case .string(let text):
            guard case .string(let part) = element else {
                throw JinjaError.runtime("'in <string>' requires string as left operand, not \(element.typeName)")
            }
            return part.isEmpty || text.unicodeScalars.firstRange(of: part.unicodeScalars) != nil
        case .list(let items): return items.contains { JinjaValue.equal($0, element) }
        case .dict(let dict): return dict[element] != nil
        case .undefined: return false
        default: throw JinjaError.runtime("argument of type '\(container.typeName)' is not iterable")
        }
    }

    // MARK: Attributes and items

    /// `value.name`: a method of the value first, then its item `name` (jinja2's `getattr`).
    static func attribute(_ value: JinjaValue, _ name: String) throws -> JinjaValue {
        if case .undefined(let message) = value { throw JinjaError.undefined(message) }
        if let method = method(of: value, name) { return .callable(method) }
        switch value {
        case .dict(let dict): return dict[name] ?? .undefined("'dict object' has no attribute '\(name)'")
        case .namespace(let namespace): return namespace.attributes[name] ?? .undefined("'Namespace object' has no attribute '\(name)'")
        default: return .undefined("'\(value.typeName) object' has no attribute '\(name)'")
        }
    }

    /// `value[key]`: the item first, then for a string key the attribute (jinja2's `getitem`).
    static func item(_ value: JinjaValue, _ key: JinjaValue) throws -> JinjaValue {
        switch (value, key) {
        case (.undefined(let message), _): throw JinjaError.undefined(message)
        case (.dict(let dict), _):
            if let item = dict[key] { return item }
        case (.list(let items), _) where key.integer != nil:
            let index = key.integer! < 0 ? key.integer! + items.count : key.integer!
            return items.indices.contains(index) ? items[index] : .undefined("list object has no element \(key.integer!)")
        case (.string(let text), _) where key.integer != nil:
            let scalars = Array(text.unicodeScalars)
            let index = key.integer! < 0 ? key.integer! + scalars.count : key.integer!
            return scalars.indices.contains(index) ? .string(String(scalars[index])) : .undefined("string index \(key.integer!) out of range")
        default: break
        }
        if case .string(let name) = key { return try attribute(value, name) }
        return .undefined("'\(value.typeName) object' has no element \(key.repr)")
    }

    /// Python's `value[start:stop:step]` of a list or string.
    static func slice(_ value: JinjaValue, _ start: Int?, _ stop: Int?, _ step: Int?) throws -> JinjaValue {
        let step = step ?? 1
        guard step != 0 else { throw JinjaError.runtime("slice step cannot be zero") }
        func indices(_ count: Int) -> [Int] {
            func clamp(_ index: Int, _ low: Int, _ high: Int) -> Int { min(max(index < 0 ? index + count : index, low), high) }
            if step > 0 {
                let from = start.map { clamp($0, 0, count) } ?? 0, to = stop.map { clamp($0, 0, count) } ?? count
                return Array(stride(from: from, to: to, by: step))
            }
            let from = start.map { clamp($0, -1, count - 1) } ?? count - 1, to = stop.map { clamp($0, -1, count - 1) } ?? -1
            return Array(stride(from: from, to: to, by: step))
        }
        switch value {
        case .list(let items): return .list(indices(items.count).map { items[$0] })
        case .string(let text):
            let scalars = Array(text.unicodeScalars)
            return .string(String(String.UnicodeScalarView(indices(scalars.count).map { scalars[$0] })))
        case .undefined(let message): throw JinjaError.undefined(message)
        default: throw JinjaError.runtime("'\(value.typeName)' object is not subscriptable")
        }
    }

    // MARK: Methods

    private static func method(of value: JinjaValue, _ name: String) -> JinjaCallable? {
        switch value {
        case .string(let text): return stringMethod(text, name)
        case .dict(let dict):
            switch name {
            case "get":
                return JinjaCallable("dict.get") { positional, keywords in
                    let bound = try Arguments(positional: positional, keywords: keywords).bind(["key", "default"], of: "get")
                    return dict[bound[0] ?? .none] ?? bound[1] ?? .none
                }
            case "items": return JinjaCallable("dict.items") { _, _ in .list(dict.entries.map { .list([$0.key, $0.value]) }) }
            case "keys": return JinjaCallable("dict.keys") { _, _ in .list(dict.entries.map(\.key)) }
            case "values": return JinjaCallable("dict.values") { _, _ in .list(dict.entries.map(\.value)) }
            case "copy": return JinjaCallable("dict.copy") { _, _ in .dict(dict) }
            case "update", "pop", "popitem", "setdefault", "clear": return immutable("dict", name)
            default: return nil
            }
        case .list(let items):
            switch name {
            case "index":
                return JinjaCallable("list.index") { positional, _ in
                    guard let element = positional.first, let index = items.firstIndex(where: { JinjaValue.equal($0, element) }) else {
                        throw JinjaError.runtime("list.index(x): x not in list")
                    }
                    return .int(index)
                }
            case "count":
                return JinjaCallable("list.count") { positional, _ in
                    .int(items.filter { item in positional.first.map { JinjaValue.equal(item, $0) } ?? false }.count)
                }
            case "append", "extend", "insert", "pop", "remove", "sort", "reverse", "clear": return immutable("list", name)
            default: return nil
            }
        default: return nil
        }
    }

    /// Methods that change a list or dict: transformers' sandbox refuses them, so the template would not render there.
    private static func immutable(_ type: String, _ name: String) -> JinjaCallable {
        JinjaCallable("\(type).\(name)") { _, _ in
            throw JinjaError.runtime("access to attribute '\(name)' of '\(type)' object is unsafe (chat templates cannot change lists or dicts)")
        }
    }

    private static func stringMethod(_ text: String, _ name: String) -> JinjaCallable? {
        func method(_ parameters: [String], _ body: @escaping ([JinjaValue?]) throws -> JinjaValue) -> JinjaCallable {
            JinjaCallable("str.\(name)") { positional, keywords in
                try body(try Arguments(positional: positional, keywords: keywords).bind(parameters, of: name))
            }
        }
        func optionalString(_ value: JinjaValue?) throws -> String? {
            switch value {
            case nil, .none?: return nil
            case .string(let text)?: return text
            case let other?: throw JinjaError.runtime("\(name)() argument must be str or None, not \(other.typeName)")
            }
        }
        func string(_ value: JinjaValue?) throws -> String {
            guard case .string(let text)? = value else { throw JinjaError.runtime("\(name)() argument must be str, not \(value?.typeName ?? "nothing")") }
            return text
        }
        switch name {
        case "strip", "lstrip", "rstrip":
            return method(["chars"]) { bound in .string(pythonStrip(text, chars: try optionalString(bound[0]), leading: name != "rstrip", trailing: name != "lstrip")) }
        case "upper": return method([]) { _ in .string(text.uppercased()) }
        case "lower": return method([]) { _ in .string(text.lowercased()) }
        case "title": return method([]) { _ in .string(pythonTitle(text)) }
        case "capitalize": return method([]) { _ in .string(pythonCapitalize(text)) }
        case "startswith", "endswith":
            return method(["prefix"]) { bound in
                let candidates: [JinjaValue] = if case .list(let items)? = bound[0] { items } else { [bound[0] ?? .none] }
                return .bool(try candidates.contains { candidate in
                    let part = try string(candidate).unicodeScalars
                    return name == "startswith" ? text.unicodeScalars.starts(with: part) : text.unicodeScalars.reversed().starts(with: part.reversed())
                })
            }
        case "split", "rsplit":
            return method(["sep", "maxsplit"]) { bound in
                let limit = bound[1]?.integer ?? -1
                return .list(try pythonSplit(text, separator: try optionalString(bound[0]), limit: limit, fromRight: name == "rsplit").map { .string($0) })
            }
        case "splitlines": return method([]) { _ in .list(pythonSplitLines(text).map { .string($0) }) }
        case "replace":
            return method(["old", "new", "count"]) { bound in
                .string(try pythonReplace(text, try string(bound[0]), try string(bound[1]), count: bound[2]?.integer ?? -1))
            }
        case "find", "count":
            return method(["sub"]) { bound in
                let part = try string(bound[0]).unicodeScalars
                let scalars = Array(text.unicodeScalars)
                if name == "count" { return .int(part.isEmpty ? scalars.count + 1 : scalars.ranges(of: Array(part)).count) }
                guard let range = scalars.firstRange(of: Array(part)) else { return .int(-1) }
                return .int(range.lowerBound)
            }
        case "join":
            return method(["iterable"]) { bound in
                .string(try (bound[0] ?? .list([])).iterated().map { item in
                    guard case .string(let part) = item else { throw JinjaError.runtime("sequence item: expected str instance, \(item.typeName) found") }
                    return part
                }.joined(separator: text))
            }
        case "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper":
            return method([]) { _ in
                let scalars = text.unicodeScalars
                guard !scalars.isEmpty || name == "islower" || name == "isupper" else { return .bool(false) }
                switch name {
                case "isdigit": return .bool(scalars.allSatisfy { $0.properties.numericType == .decimal || $0.properties.numericType == .digit })
                case "isalpha": return .bool(scalars.allSatisfy(\.properties.isAlphabetic))
                case "isalnum": return .bool(scalars.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
                case "isspace": return .bool(scalars.allSatisfy(isPythonWhitespace))
                case "islower": return .bool(scalars.contains(where: \.properties.isCased) && text.lowercased() == text)
                default: return .bool(scalars.contains(where: \.properties.isCased) && text.uppercased() == text)
                }
            }
        case "format":
            return JinjaCallable("str.format") { positional, keywords in .string(try pythonFormat(text, positional, keywords)) }
        default: return nil
        }
    }

    // MARK: Filters

    static func filter(_ name: String, _ value: JinjaValue, _ arguments: Arguments) throws -> JinjaValue {
        func bind(_ names: [String]) throws -> [JinjaValue?] { try arguments.bind(names, of: name) }
        switch name {
        case "trim":
            let chars = try bind(["chars"])[0]
            return .string(pythonStrip(value.text, chars: chars.flatMap { $0.isNone ? nil : $0.text }, leading: true, trailing: true))
        case "tojson":
            let bound = try bind(["ensure_ascii", "indent", "separators", "sort_keys"])
            let indent: String? = switch bound[1] {
            case .int(let width)?: String(repeating: " ", count: max(0, width))
            case .string(let text)?: text
            default: nil
            }
            var itemSeparator: String?, keySeparator = ": "
            if case .list(let separators)? = bound[2], separators.count == 2 {
                itemSeparator = separators[0].text
                keySeparator = separators[1].text
            }
            return .string(try value.json(indent: indent, itemSeparator: itemSeparator, keySeparator: keySeparator,
                                          sortKeys: bound[3]?.truthy ?? false, ensureASCII: bound[0]?.truthy ?? false))
        case "length", "count":
            switch value {
            case .string(let text): return .int(text.unicodeScalars.count)
            case .list(let items): return .int(items.count)
            case .dict(let dict): return .int(dict.entries.count)
            case .undefined: return .int(0)
            default: throw JinjaError.runtime("object of type '\(value.typeName)' has no len()")
            }
        case "upper": return .string(value.text.uppercased())
        case "lower": return .string(value.text.lowercased())
        case "capitalize": return .string(pythonCapitalize(value.text))
        case "title":
            // jinja2's own rule: each run after a space, "-", "(", "{", "[" or "<" starts upper case, the rest lower.
            var out = "", startsWord = true
            for scalar in value.text.unicodeScalars {
                let piece = String(scalar)
                out += startsWord ? piece.uppercased() : piece.lowercased()
                startsWord = isPythonWhitespace(scalar) || "-({[<".unicodeScalars.contains(scalar)
            }
            return .string(out)
        case "default", "d":
            let bound = try bind(["default_value", "boolean"])
            let useDefault = value.isUndefined || ((bound[1]?.truthy ?? false) && !value.truthy)
            return useDefault ? bound[0] ?? .string("") : value
        case "join":
            let bound = try bind(["d", "attribute"])
            var items = try value.iterated()
            if let attribute = bound[1] { items = try items.map { try lookup($0, attribute) } }
            return .string(items.map(\.text).joined(separator: bound[0]?.text ?? ""))
        case "replace":
            let bound = try bind(["old", "new", "count"])
            return .string(try pythonReplace(value.text, bound[0]?.text ?? "", bound[1]?.text ?? "", count: bound[2]?.integer ?? -1))
        case "first":
            return try value.iterated().first ?? .undefined("the sequence given to first is empty")
        case "last":
            return try value.iterated().last ?? .undefined("the sequence given to last is empty")
        case "list": return .list(try value.iterated())
        case "reverse":
            if case .string(let text) = value { return .string(String(String.UnicodeScalarView(text.unicodeScalars.reversed()))) }
            return .list(try value.iterated().reversed())
        case "items":
            switch value {
            case .dict(let dict): return .list(dict.entries.map { .list([$0.key, $0.value]) })
            case .undefined: return .list([])
            default: throw JinjaError.runtime("items filter: expected a mapping, got '\(value.typeName)'")
            }
        case "dictsort":
            guard case .dict(let dict) = value else { throw JinjaError.runtime("dictsort filter: expected a mapping, got '\(value.typeName)'") }
            let bound = try bind(["case_sensitive", "by", "reverse"])
            let byValue = bound[1]?.text == "value"
            let caseSensitive = bound[0]?.truthy ?? false
            var entries = try dict.entries.sorted { a, b in
                try JinjaValue.less(sortKey(byValue ? a.value : a.key, caseSensitive), sortKey(byValue ? b.value : b.key, caseSensitive), "<")
            }
            if bound[2]?.truthy ?? false { entries.reverse() }
            return .list(entries.map { .list([$0.key, $0.value]) })
        case "selectattr", "rejectattr":
            let keep = name == "selectattr"
            guard let attribute = arguments.positional.first else { throw JinjaError.runtime("\(name) needs an attribute") }
            let test = Array(arguments.positional.dropFirst())
            return .list(try value.iterated().filter { item in try passes(try lookup(item, attribute), test) == keep })
        case "select", "reject":
            let keep = name == "select"
            return .list(try value.iterated().filter { item in try passes(item, arguments.positional) == keep })
        case "map":
            let items = try value.iterated()
            if let attribute = arguments.keywords.first(where: { $0.0 == "attribute" })?.1 {
                let fallback = arguments.keywords.first(where: { $0.0 == "default" })?.1
                return .list(try items.map { item in
                    let found = try lookup(item, attribute)
                    return found.isUndefined ? fallback ?? found : found
                })
            }
            guard case .string(let filterName)? = arguments.positional.first else { throw JinjaError.runtime("map needs a filter name or attribute=") }
            let rest = Arguments(positional: Array(arguments.positional.dropFirst()), keywords: arguments.keywords)
            return .list(try items.map { try filter(filterName, $0, rest) })
        case "sort", "unique", "min", "max":
            let bound = try bind(name == "sort" ? ["reverse", "case_sensitive", "attribute"] : ["case_sensitive", "attribute"])
            let caseSensitive = (name == "sort" ? bound[1] : bound[0])?.truthy ?? false
            let attribute = name == "sort" ? bound[2] : bound[1]
            let items = try value.iterated()
            func key(_ item: JinjaValue) throws -> JinjaValue { try sortKey(attribute.map { try lookup(item, $0) } ?? item, caseSensitive) }
            switch name {
            case "sort":
                var sorted = try items.sorted { try JinjaValue.less(try key($0), try key($1), "<") }
                if bound[0]?.truthy ?? false { sorted.reverse() }
                return .list(sorted)
            case "unique":
                var seen: [JinjaValue] = [], out: [JinjaValue] = []
                for item in items {
                    let itemKey = try key(item)
                    if !seen.contains(where: { JinjaValue.equal($0, itemKey) }) { seen.append(itemKey); out.append(item) }
                }
                return .list(out)
            default:
                // The first of the smallest (largest) items, as Python's min (max).
                guard var best = items.first else { return .undefined("no \(name) item of an empty sequence") }
                var bestKey = try key(best)
                for item in items.dropFirst() {
                    let itemKey = try key(item)
                    let better = try name == "min" ? JinjaValue.less(itemKey, bestKey, "<") : JinjaValue.less(bestKey, itemKey, "<")
                    if better { (best, bestKey) = (item, itemKey) }
                }
                return best
            }
        case "sum":
            let bound = try bind(["attribute", "start"])
            var total = bound[1] ?? .int(0)
            for item in try value.iterated() { total = try arithmetic("+", total, try bound[0].map { try lookup(item, $0) } ?? item) }
            return total
        case "string": return .string(value.text)
        case "safe": return value
        case "escape", "e", "forceescape":
            var out = ""
            for character in value.text {
                switch character {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\"": out += "&#34;"
                case "'": out += "&#39;"
                default: out.append(character)
                }
            }
            return .string(out)
        case "int":
            let bound = try bind(["default", "base"])
            let fallback = bound[0] ?? .int(0)
            switch value {
            case .int, .bool: return .int(value.integer!)
            case .double(let number): return number.isFinite ? .int(Int(number)) : fallback
            case .string(let text):
                let trimmed = pythonStrip(text, chars: nil, leading: true, trailing: true).replacing("_", with: "")
                if let integer = Int(trimmed, radix: bound[1]?.integer ?? 10) { return .int(integer) }
                if let number = Double(trimmed), number.isFinite { return .int(Int(number)) }
                return fallback
            default: return fallback
            }
        case "float":
            let fallback = try bind(["default"])[0] ?? .double(0)
            switch value {
            case .int, .bool, .double: return .double(value.number!)
            case .string(let text): return Double(pythonStrip(text, chars: nil, leading: true, trailing: true)).map { .double($0) } ?? fallback
            default: return fallback
            }
        case "abs":
            switch value {
            case .int(let integer): return .int(integer == .min ? integer : abs(integer))
            case .double(let number): return .double(abs(number))
            case .bool(let flag): return .int(flag ? 1 : 0)
            default: throw JinjaError.runtime("bad operand type for abs(): '\(value.typeName)'")
            }
        case "round":
            let bound = try bind(["precision", "method"])
            guard let number = value.number else { throw JinjaError.runtime("round filter: expected a number, got '\(value.typeName)'") }
            let scale = pow(10, Double(bound[0]?.integer ?? 0))
            let rule: FloatingPointRoundingRule = switch bound[1]?.text ?? "common" {
            case "ceil": .up
            case "floor": .down
            default: .toNearestOrEven  // Python's round()
            }
            return .double((number * scale).rounded(rule) / scale)
        case "indent":
            let bound = try bind(["width", "first", "blank"])
            let indentation = if case .string(let text)? = bound[0] { text } else { String(repeating: " ", count: bound[0]?.integer ?? 4) }
            let lines = pythonSplitLines(value.text + "\n")
            var out: String
            if bound[2]?.truthy ?? false {
                out = lines.joined(separator: "\n" + indentation)
            } else {
                out = lines.first ?? ""
                if lines.count > 1 { out += "\n" + lines.dropFirst().map { $0.isEmpty ? $0 : indentation + $0 }.joined(separator: "\n") }
            }
            return .string((bound[1]?.truthy ?? false) ? indentation + out : out)
        case "wordcount":
            return .int(value.text.unicodeScalars.split { !($0.properties.isAlphabetic || $0.properties.numericType != nil || $0 == "_") }.count)
        case "attr":
            guard case .string(let attributeName)? = try bind(["name"])[0] else { throw JinjaError.runtime("attr filter needs a name") }
            return try attribute(value, attributeName)
        case "batch", "slice", "groupby", "format", "center", "truncate", "wordwrap", "urlize", "striptags", "pprint", "xmlattr":
            throw JinjaError.runtime("the filter '\(name)' is not supported")
        default:
            throw JinjaError.runtime("no filter named '\(name)'")
        }
    }

    /// `attribute` of `item` as selectattr, map and sort read it: "a.b" goes down the items, a number is an index.
    private static func lookup(_ item: JinjaValue, _ attribute: JinjaValue) throws -> JinjaValue {
        guard case .string(let path) = attribute else { return try self.item(item, attribute) }
        var value = item
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            if value.isUndefined { return value }
            value = try self.item(value, Int(part).map { .int($0) } ?? .string(String(part)))
        }
        return value
    }

    private static func sortKey(_ value: JinjaValue, _ caseSensitive: Bool) -> JinjaValue {
        if !caseSensitive, case .string(let text) = value { return .string(text.lowercased()) }
        return value
    }

    /// select/selectattr's condition: the named test with its arguments, or the value's truth when none is named.
    private static func passes(_ value: JinjaValue, _ testArguments: [JinjaValue]) throws -> Bool {
        guard let first = testArguments.first else { return value.truthy }
        guard case .string(let name) = first else { throw JinjaError.runtime("a test name must be a string") }
        return try test(name, value, Arguments(positional: Array(testArguments.dropFirst())))
    }

    // MARK: Tests

    static func test(_ name: String, _ value: JinjaValue, _ arguments: Arguments) throws -> Bool {
        func other() throws -> JinjaValue {
            guard let argument = arguments.positional.first ?? arguments.keywords.first?.1 else { throw JinjaError.runtime("the test '\(name)' needs an argument") }
            return argument
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": return value.isNone
        case "boolean": if case .bool = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "integer": if case .int = value { return true } else { return false }
        case "float": if case .double = value { return true } else { return false }
        case "number": return value.number != nil
        case "string": if case .string = value { return true } else { return false }
        case "mapping": if case .dict = value { return true } else { return false }
        case "iterable":
            switch value {
            case .string, .list, .dict, .undefined: return true
            default: return false
            }
        case "sequence":
            switch value {
            case .string, .list, .dict, .undefined: return true
            default: return false
            }
        case "callable": if case .callable = value { return true } else { return false }
        case "odd", "even":
            guard let integer = value.integer else { throw JinjaError.runtime("the test '\(name)' needs an integer, not '\(value.typeName)'") }
            return (integer % 2 != 0) == (name == "odd")
        case "divisibleby":
            guard let integer = value.integer, let divisor = try other().integer, divisor != 0 else {
                throw JinjaError.runtime("divisibleby needs integers (and a divisor other than 0)")
            }
            return integer % divisor == 0
        case "eq", "equalto", "==": return JinjaValue.equal(value, try other())
        case "ne", "!=": return !JinjaValue.equal(value, try other())
        case "lt", "lessthan", "<": return try JinjaValue.less(value, try other(), "<")
        case "gt", "greaterthan", ">": return try JinjaValue.less(try other(), value, ">")
        case "le", "<=": return try !JinjaValue.less(try other(), value, "<=")
        case "ge", ">=": return try !JinjaValue.less(value, try other(), ">=")
        case "in": return try contains(try other(), value)
        case "sameas":
            switch (value, try other()) {
            case (.none, .none): return true
            case let (.bool(a), .bool(b)): return a == b
            case let (.namespace(a), .namespace(b)): return a === b
            case let (.callable(a), .callable(b)): return a === b
            default: return false
            }
        case "lower": if case .string(let text) = value { return text.lowercased() == text } else { return false }
        case "upper": if case .string(let text) = value { return text.uppercased() == text } else { return false }
        case "escaped": return false
        default: throw JinjaError.runtime("no test named '\(name)'")
        }
    }
}

// MARK: Python string functions

/// `str.isspace()` of one character.
func isPythonWhitespace(_ scalar: Unicode.Scalar) -> Bool {
    scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
}

/// `str.strip(chars)`, `lstrip`, `rstrip`: whitespace when `chars` is nil.
func pythonStrip(_ text: String, chars: String?, leading: Bool, trailing: Bool) -> String {
    let set = chars.map { Set($0.unicodeScalars) }
    func strips(_ scalar: Unicode.Scalar) -> Bool { set?.contains(scalar) ?? isPythonWhitespace(scalar) }
    var scalars = Substring(text).unicodeScalars[...]
    if leading { scalars = scalars.drop(while: strips) }
    if trailing { while let last = scalars.last, strips(last) { scalars.removeLast() } }
    return String(scalars)
}

/// `str.split(sep, maxsplit)` and `str.rsplit`.
func pythonSplit(_ text: String, separator: String?, limit: Int, fromRight: Bool) throws -> [String] {
    let scalars = Array(fromRight ? text.unicodeScalars.reversed() : Array(text.unicodeScalars))
    func string(_ part: ArraySlice<Unicode.Scalar>) -> String {
        String(String.UnicodeScalarView(fromRight ? Array(part.reversed()) : Array(part)))
    }
    var parts: [String] = []
    if let separator {
        let separatorScalars = fromRight ? Array(separator.unicodeScalars.reversed()) : Array(separator.unicodeScalars)
        guard !separatorScalars.isEmpty else { throw JinjaError.runtime("empty separator") }
        var start = 0, index = 0
        while index + separatorScalars.count <= scalars.count, limit < 0 || parts.count < limit {
            if scalars[index ..< index + separatorScalars.count].elementsEqual(separatorScalars) {
                parts.append(string(scalars[start..<index]))
                index += separatorScalars.count
                start = index
            } else {
                index += 1
            }
        }
        parts.append(string(scalars[start...]))
    } else {
        var index = 0
        while true {
            while index < scalars.count, isPythonWhitespace(scalars[index]) { index += 1 }
            guard index < scalars.count else { break }
            if limit >= 0 && parts.count == limit {
                var end = scalars.count
                while end > index, isPythonWhitespace(scalars[end - 1]) { end -= 1 }
                parts.append(string(scalars[index..<end]))
                break
            }
            let start = index
            while index < scalars.count, !isPythonWhitespace(scalars[index]) { index += 1 }
            parts.append(string(scalars[start..<index]))
        }
    }
    return fromRight ? parts.reversed() : parts
}

/// `str.splitlines()`.
func pythonSplitLines(_ text: String) -> [String] {
    var lines: [String] = []
    var current = String.UnicodeScalarView()
    var scalars = Array(text.unicodeScalars)[...]
    while let scalar = scalars.popFirst() {
        if ["\n", "\r", "\u{0B}", "\u{0C}", "\u{1C}", "\u{1D}", "\u{1E}", "\u{85}", "\u{2028}", "\u{2029}"].contains(scalar) {
            if scalar == "\r", scalars.first == "\n" { scalars.removeFirst() }
            lines.append(String(current))
            current = String.UnicodeScalarView()
        } else {
            current.append(scalar)
        }
    }
    if !current.isEmpty { lines.append(String(current)) }
    return lines
}

/// `str.replace(old, new, count)`.
func pythonReplace(_ text: String, _ old: String, _ new: String, count: Int) throws -> String {
    let scalars = Array(text.unicodeScalars), oldScalars = Array(old.unicodeScalars)
    var out = String.UnicodeScalarView()
    var replaced = 0, index = 0
    if oldScalars.isEmpty {
        // Python inserts `new` before every character and at the end.
        for scalar in scalars {
            if count < 0 || replaced < count { out.append(contentsOf: new.unicodeScalars); replaced += 1 }
            out.append(scalar)
        }
        if count < 0 || replaced < count { out.append(contentsOf: new.unicodeScalars) }
        return String(out)
    }
    while index < scalars.count {
        if (count < 0 || replaced < count), index + oldScalars.count <= scalars.count,
           scalars[index ..< index + oldScalars.count].elementsEqual(oldScalars) {
            out.append(contentsOf: new.unicodeScalars)
            index += oldScalars.count
            replaced += 1
        } else {
            out.append(scalars[index])
            index += 1
        }
    }
    return String(out)
}

/// `str.title()`: a cased character after an uncased one is upper case, other cased characters lower case.
func pythonTitle(_ text: String) -> String {
    var out = "", previousCased = false
    for scalar in text.unicodeScalars {
        let piece = String(scalar)
        out += previousCased ? piece.lowercased() : piece.uppercased()
        previousCased = scalar.properties.isCased
    }
    return out
}

/// `str.capitalize()`: the first character upper case, the rest lower case.
func pythonCapitalize(_ text: String) -> String {
    guard let first = text.unicodeScalars.first else { return "" }
    return String(first).uppercased() + String(text.unicodeScalars.dropFirst()).lowercased()
}

/// `str.format(*args, **kwargs)` with plain `{}`, `{0}` and `{name}` fields.
func pythonFormat(_ text: String, _ positional: [JinjaValue], _ keywords: [(String, JinjaValue)]) throws -> String {
    var out = "", field: String?, automatic = 0
    var scalars = Array(text.unicodeScalars)[...]
    while let scalar = scalars.popFirst() {
        if var name = field {
            guard scalar == "}" else { name.unicodeScalars.append(scalar); field = name; continue }
            field = nil
            if name.contains(":") || name.contains("!") { throw JinjaError.runtime("str.format: format specs are not supported ({\(name)})") }
            let value: JinjaValue?
            if name.isEmpty {
                value = automatic < positional.count ? positional[automatic] : nil
                automatic += 1
            } else if let index = Int(name) {
                value = index < positional.count ? positional[index] : nil
            } else {
                value = keywords.first { $0.0 == name }?.1
            }
            guard let value else { throw JinjaError.runtime("str.format: no argument for {\(name)}") }
            out += value.text
        } else if scalar == "{" {
            if scalars.first == "{" { scalars.removeFirst(); out += "{" } else { field = "" }
        } else if scalar == "}" {
            guard scalars.first == "}" else { throw JinjaError.runtime("str.format: single '}' encountered") }
            scalars.removeFirst()
            out += "}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    if field != nil { throw JinjaError.runtime("str.format: '{' is not closed") }
    return out
}
