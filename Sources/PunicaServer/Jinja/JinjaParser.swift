/// An expression of the template language.
indirect enum JinjaExpr {
    case literal(JinjaValue)
    case name(String)
    case list([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)])
    /// `value.name`
    case attribute(JinjaExpr, String)
    /// `value[key]`
    case item(JinjaExpr, JinjaExpr)
    /// `value[start:stop:step]`
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
    case call(JinjaExpr, JinjaArguments)
    /// `value | name(arguments)`
    case filter(JinjaExpr, String, JinjaArguments)
    /// `value is [not] name arguments`
    case test(JinjaExpr, String, JinjaArguments, negated: Bool)
    /// `-x`, `+x`, `not x`
    case unary(String, JinjaExpr)
    /// Arithmetic, `~`, `and`, `or`.
    case binary(String, JinjaExpr, JinjaExpr)
    /// `a < b <= c`, `==`, `in`, `not in`: each comparison against the previous operand.
    case compare(JinjaExpr, [(String, JinjaExpr)])
    /// `then if condition else otherwise` (no `else`: undefined).
    case conditional(condition: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
}

struct JinjaArguments {
    var positional: [JinjaExpr] = []
    var keywords: [(String, JinjaExpr)] = []
}

/// A macro's parameters, with their default values.
typealias JinjaParameters = [(name: String, defaultValue: JinjaExpr?)]

/// A statement of a template, with the line it starts on (for error messages).
indirect enum JinjaNode {
    case text(String)
    case output(JinjaExpr, line: Int)
    case conditional([(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode], line: Int)
    case loop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode], line: Int)
    /// `{% set a = … %}`, `{% set a, b = … %}`
    case assign(targets: [String], JinjaExpr, line: Int)
    /// `{% set ns.attribute = … %}`
    case assignAttribute(namespace: String, attribute: String, JinjaExpr, line: Int)
    /// `{% set name | filters %}body{% endset %}`
    case assignBlock(String, filters: [(String, JinjaArguments)], body: [JinjaNode], line: Int)
    case macro(String, JinjaParameters, body: [JinjaNode], line: Int)
    /// `{% call(parameters) macro(…) %}body{% endcall %}`: the macro's `caller()` renders body.
    case callBlock(JinjaExpr, JinjaParameters, body: [JinjaNode], line: Int)
    case filterBlock([(String, JinjaArguments)], body: [JinjaNode], line: Int)
    case breakLoop(line: Int)
    case continueLoop(line: Int)
}

/// Builds the statement tree of a template from its pieces, following jinja2's grammar and operator precedence.
struct JinjaParser {
    private var pieces: [JinjaPiece]
    private var index = 0

    static func parse(_ template: String) throws -> [JinjaNode] {
        var parser = JinjaParser(pieces: try JinjaLexer.pieces(of: template))
        let (nodes, end) = try parser.body(until: [])
        if let end { throw JinjaError.syntax("unexpected {% \(end.name) %}", line: end.line) }
        return nodes
    }

    private init(pieces: [JinjaPiece]) { self.pieces = pieces }

    /// Statements up to one of the tags `ends` (returned, with its tokens after the tag's name), or the template's end.
    private mutating func body(until ends: Set<String>) throws -> ([JinjaNode], (name: String, tokens: TokenStream, line: Int)?) {
        var nodes: [JinjaNode] = []
        while index < pieces.count {
            let piece = pieces[index]
            index += 1
            switch piece {
            case .text(let text):
                nodes.append(.text(text))
            case let .output(tokens, line):
                var stream = TokenStream(tokens, line: line)
                let expression = try stream.expression()
                try stream.end()
                nodes.append(.output(expression, line: line))
            case let .statement(tokens, line):
                var stream = TokenStream(tokens, line: line)
                let name = try stream.name()
                if ends.contains(name) { return (nodes, (name, stream, line)) }
                nodes.append(contentsOf: try statement(name, &stream, line: line))
            }
        }
        return (nodes, nil)
    }

    /// The rest of a block up to `end`, which must come.
    private mutating func block(_ tag: String, line: Int, until ends: Set<String>) throws -> ([JinjaNode], String, TokenStream) {
        let (nodes, end) = try body(until: ends)
        guard let end else {
            throw JinjaError.syntax("{% \(tag) %} opened here is not closed (expected {% \(ends.sorted().joined(separator: " or ")) %})", line: line)
        }
        return (nodes, end.name, end.tokens)
    }

    private mutating func statement(_ name: String, _ stream: inout TokenStream, line: Int) throws -> [JinjaNode] {
        switch name {
        case "if":
            var branches = [(try stream.expression(), [JinjaNode]())]
            try stream.end()
            while true {
                var (nodes, end, endStream) = try block("if", line: line, until: ["elif", "else", "endif"])
                branches[branches.count - 1].1 = nodes
                switch end {
                case "elif":
                    branches.append((try endStream.expression(), []))
                    try endStream.end()
                case "else":
                    try endStream.end()
                    let (otherwise, _, closing) = try block("if", line: line, until: ["endif"])
                    try closing.end()
                    return [.conditional(branches, otherwise: otherwise, line: line)]
                default:
                    try endStream.end()
                    return [.conditional(branches, otherwise: [], line: line)]
                }
            }
        case "for":
            var targets = [try stream.name()]
            while stream.skip(",") { targets.append(try stream.name()) }
            try stream.expectName("in")
            let iterable = try stream.expression(conditional: false)
            let filter = try stream.skipName("if") ? stream.expression(conditional: false) : nil
            if stream.skipName("recursive") { throw JinjaError.syntax("recursive loops are not supported", line: line) }
            try stream.end()
            let (body, end, endStream) = try block("for", line: line, until: ["else", "endfor"])
            try endStream.end()
            var otherwise: [JinjaNode] = []
            if end == "else" {
                let (nodes, _, closing) = try block("for", line: line, until: ["endfor"])
                try closing.end()
                otherwise = nodes
            }
            return [.loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, line: line)]
        case "set":
            let target = try stream.name()
            if stream.skip(".") {
                let attribute = try stream.name()
                try stream.expect("=")
                let value = try stream.expression()
                try stream.end()
                return [.assignAttribute(namespace: target, attribute: attribute, value, line: line)]
            }
            var targets = [target]
            while stream.skip(",") { targets.append(try stream.name()) }
            if stream.skip("=") {
                let value = try stream.expression()
                try stream.end()
                return [.assign(targets: targets, value, line: line)]
            }
            guard targets.count == 1 else { throw JinjaError.syntax("a block {% set %} assigns one name", line: line) }
            let filters = try stream.filters()
            try stream.end()
            let (body, _, closing) = try block("set", line: line, until: ["endset"])
            try closing.end()
            return [.assignBlock(target, filters: filters, body: body, line: line)]
        case "macro":
            let macroName = try stream.name()
            let parameters = try stream.parameters()
            try stream.end()
            let (body, _, closing) = try block("macro", line: line, until: ["endmacro"])
            try closing.end(allowing: macroName)
            return [.macro(macroName, parameters, body: body, line: line)]
        case "call":
            let parameters = stream.peekSymbol("(") ? try stream.parameters() : []
            let call = try stream.expression()
            try stream.end()
            let (body, _, closing) = try block("call", line: line, until: ["endcall"])
            try closing.end()
            return [.callBlock(call, parameters, body: body, line: line)]
        case "filter":
            var filters = [(try stream.name(), try stream.arguments())]
            filters += try stream.filters()
            try stream.end()
            let (body, _, closing) = try block("filter", line: line, until: ["endfilter"])
            try closing.end()
            return [.filterBlock(filters, body: body, line: line)]
        case "generation":
            // transformers' extension: marks the assistant's text (for training masks); rendering shows the body.
            try stream.end()
            let (body, _, closing) = try block("generation", line: line, until: ["endgeneration"])
            try closing.end()
            return body
        case "break":
            try stream.end()
            return [.breakLoop(line: line)]
        case "continue":
            try stream.end()
            return [.continueLoop(line: line)]
        default:
            throw JinjaError.syntax("unknown or unsupported tag {% \(name) %}", line: line)
        }
    }
}

/// The tokens of one tag, read by recursive descent (jinja2's precedence: or < and < not < comparisons < + - < ~ <
/// * / // % < ** < unary minus < filters and tests < attribute, item and call).
struct TokenStream {
    private let tokens: [JinjaToken]
    private var position = 0
    private let line: Int

    init(_ tokens: [JinjaToken], line: Int) {
        self.tokens = tokens
        self.line = line
    }

    private var current: JinjaToken? { position < tokens.count ? tokens[position] : nil }

    private func fail(_ message: String) -> JinjaError {
        .syntax(message + (current.map { ", found \(pythonRepr($0.text))" } ?? ", found the end of the tag"), line: current?.line ?? line)
    }

    func peekSymbol(_ symbol: String) -> Bool { current?.isSymbol(symbol) ?? false }
    private func peekName(_ name: String) -> Bool { current?.isName(name) ?? false }

    mutating func skip(_ symbol: String) -> Bool {
        guard peekSymbol(symbol) else { return false }
        position += 1
        return true
    }

    mutating func skipName(_ name: String) -> Bool {
        guard peekName(name) else { return false }
        position += 1
        return true
    }

    mutating func expect(_ symbol: String) throws {
        guard skip(symbol) else { throw fail("expected '\(symbol)'") }
    }

    mutating func expectName(_ name: String) throws {
        guard skipName(name) else { throw fail("expected '\(name)'") }
    }

    mutating func name() throws -> String {
        guard let token = current, token.kind == .name else { throw fail("expected a name") }
        position += 1
        return token.text
    }

    /// The tag must end here (an end tag may repeat its block's name: `{% endmacro name %}`).
    func end(allowing name: String? = nil) throws {
        var copy = self
        if let name { _ = copy.skipName(name) }
        guard copy.current == nil else { throw copy.fail("expected the end of the tag") }
    }

    mutating func expression(conditional: Bool = true) throws -> JinjaExpr {
        let value = try or()
        guard conditional, skipName("if") else { return value }
        let condition = try or()
        let otherwise = try skipName("else") ? expression() : nil
        return .conditional(condition: condition, then: value, otherwise: otherwise)
    }

    private mutating func or() throws -> JinjaExpr {
        var left = try and()
        while skipName("or") { left = .binary("or", left, try and()) }
        return left
    }

    private mutating func and() throws -> JinjaExpr {
        var left = try not()
        while skipName("and") { left = .binary("and", left, try not()) }
        return left
    }

    private mutating func not() throws -> JinjaExpr {
        if skipName("not") { return .unary("not", try not()) }
        return try compare()
    }

    private mutating func compare() throws -> JinjaExpr {
        let first = try sum()
        var rest: [(String, JinjaExpr)] = []
        while true {
            if let token = current, token.kind == .symbol, ["==", "!=", "<", "<=", ">", ">="].contains(token.text) {
                position += 1
                rest.append((token.text, try sum()))
            } else if skipName("in") {
                rest.append(("in", try sum()))
            } else if peekName("not"), position + 1 < tokens.count, tokens[position + 1].isName("in") {
                position += 2
                rest.append(("not in", try sum()))
            } else {
                break
            }
        }
        return rest.isEmpty ? first : .compare(first, rest)
    }

    private mutating func sum() throws -> JinjaExpr {
        var left = try concatenation()
        while let token = current, token.isSymbol("+") || token.isSymbol("-") {
            position += 1
            left = .binary(token.text, left, try concatenation())
        }
        return left
    }

    private mutating func concatenation() throws -> JinjaExpr {
        var left = try product()
        while skip("~") { left = .binary("~", left, try product()) }
        return left
    }

    private mutating func product() throws -> JinjaExpr {
        var left = try power()
        while let token = current, token.kind == .symbol, ["*", "/", "//", "%"].contains(token.text) {
            position += 1
            left = .binary(token.text, left, try power())
        }
        return left
    }

    private mutating func power() throws -> JinjaExpr {
        var left = try unary()
        while skip("**") { left = .binary("**", left, try unary()) }
        return left
    }

    private mutating func unary(withFilters: Bool = true) throws -> JinjaExpr {
        var value: JinjaExpr
        if let token = current, token.isSymbol("-") || token.isSymbol("+") {
            position += 1
            value = .unary(token.text, try unary(withFilters: false))
        } else {
            value = try postfix(try primary())
        }
        return withFilters ? try filtersAndTests(value) : value
    }

    private mutating func primary() throws -> JinjaExpr {
        guard let token = current else { throw fail("expected an expression") }
        position += 1
        switch token.kind {
        case .name:
            switch token.text {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(token.text)
            }
        case .string:
            var text = token.text
            while let next = current, next.kind == .string {
                text += next.text
                position += 1
            }
            return .literal(.string(text))
        case .integer:
            guard let value = Int(token.text) else { throw JinjaError.syntax("integer \(token.text) is too large", line: token.line) }
            return .literal(.int(value))
        case .float:
            return .literal(.double(Double(token.text) ?? .nan))
        case .symbol:
            switch token.text {
            case "(":
                if skip(")") { return .list([]) }
                let first = try expression()
                guard skip(",") else {
                    try expect(")")
                    return first
                }
                // A tuple: a list for the template's purposes.
                var items = [first]
                while !peekSymbol(")") {
                    items.append(try expression())
                    if !skip(",") { break }
                }
                try expect(")")
                return .list(items)
            case "[":
                var items: [JinjaExpr] = []
                while !peekSymbol("]") {
                    items.append(try expression())
                    if !skip(",") { break }
                }
                try expect("]")
                return .list(items)
            case "{":
                var entries: [(JinjaExpr, JinjaExpr)] = []
                while !peekSymbol("}") {
                    let key = try expression()
                    try expect(":")
                    entries.append((key, try expression()))
                    if !skip(",") { break }
                }
                try expect("}")
                return .dict(entries)
            default:
                position -= 1
                throw fail("expected an expression")
            }
        }
    }

    private mutating func postfix(_ base: JinjaExpr) throws -> JinjaExpr {
        var value = base
        while true {
            if skip(".") {
                guard let token = current, token.kind == .name || token.kind == .integer else { throw fail("expected an attribute name") }
                position += 1
                value = token.kind == .integer ? .item(value, .literal(.int(Int(token.text) ?? 0))) : .attribute(value, token.text)
            } else if skip("[") {
                value = try subscriptOrSlice(value)
            } else if peekSymbol("(") {
                value = .call(value, try arguments())
            } else {
                return value
            }
        }
    }

    private mutating func subscriptOrSlice(_ value: JinjaExpr) throws -> JinjaExpr {
        var parts: [JinjaExpr?] = []
        var current: JinjaExpr? = nil
        var isSlice = false
        while !peekSymbol("]") {
            if skip(":") {
                isSlice = true
                parts.append(current)
                current = nil
            } else {
                guard current == nil else { throw fail("expected ':' or ']'") }
                current = try expression()
            }
        }
        try expect("]")
        parts.append(current)
        guard isSlice else {
            guard let key = parts[0] else { throw fail("expected a subscript") }
            return .item(value, key)
        }
        guard parts.count <= 3 else { throw JinjaError.syntax("a slice has at most start:stop:step", line: line) }
        while parts.count < 3 { parts.append(nil) }
        return .slice(value, parts[0], parts[1], parts[2])
    }

    /// `(a, b, name=c)`, or nothing when no parenthesis follows.
    mutating func arguments() throws -> JinjaArguments {
        var arguments = JinjaArguments()
        guard skip("(") else { return arguments }
        while !peekSymbol(")") {
            if let token = current, token.kind == .name, position + 1 < tokens.count, tokens[position + 1].isSymbol("=") {
                position += 2
                arguments.keywords.append((token.text, try expression()))
            } else {
                guard arguments.keywords.isEmpty else { throw fail("positional argument after keyword arguments") }
                arguments.positional.append(try expression())
            }
            if !skip(",") { break }
        }
        try expect(")")
        return arguments
    }

    /// `(a, b=default)` of a macro or call block.
    mutating func parameters() throws -> JinjaParameters {
        var parameters: JinjaParameters = []
        try expect("(")
        while !peekSymbol(")") {
            let name = try name()
            let defaultValue = try skip("=") ? expression() : nil
            parameters.append((name, defaultValue))
            if !skip(",") { break }
        }
        try expect(")")
        return parameters
    }

    /// `| name(arguments) | …`
    mutating func filters() throws -> [(String, JinjaArguments)] {
        var filters: [(String, JinjaArguments)] = []
        while skip("|") { filters.append((try name(), try arguments())) }
        return filters
    }

    private mutating func filtersAndTests(_ base: JinjaExpr) throws -> JinjaExpr {
        var value = base
        while true {
            if skip("|") {
                value = .filter(value, try name(), try arguments())
            } else if skipName("is") {
                let negated = skipName("not")
                let test = try name()
                var arguments = JinjaArguments()
                if peekSymbol("(") {
                    arguments = try self.arguments()
                } else if let token = current, !["else", "or", "and"].contains(token.text) || token.kind != .name,
                          token.kind != .symbol || ["[", "{"].contains(token.text) {
                    arguments.positional = [try postfix(try primary())]
                }
                value = .test(value, test, arguments, negated: negated)
            } else {
                return value
            }
        }
    }
}
