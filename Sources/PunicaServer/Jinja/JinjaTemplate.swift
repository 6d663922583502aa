#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A parsed Jinja template, rendered as jinja2 renders it in transformers' `apply_chat_template`: an immutable
/// sandbox (templates cannot change lists or dicts), `trim_blocks` and `lstrip_blocks`, the `loopcontrols`
/// extension, `{% generation %}` blocks, and the globals `raise_exception`, `strftime_now`, `namespace`, `dict`
/// and `range`. Covers the subset of the language chat templates use; anything else (`include`, `import`,
/// `extends`, recursive loops, filters such as `groupby`) is a clear `JinjaError`. One known difference: tuples
/// are lists, so `{{ d.items() | list }}` prints `[['a', 1]]` where Python prints `[('a', 1)]`.
struct JinjaTemplate {
    private let nodes: [JinjaNode]

    init(_ source: String) throws {
        nodes = try JinjaParser.parse(source)
    }

    /// The text for `variables`. `now` is what `strftime_now` formats (in the local time zone, as transformers does).
    func render(_ variables: [String: JinjaValue], now: Date = Date(), timeZone: TimeZone = .current) throws -> String {
        let globals = JinjaScope(parent: nil)
        globals.variables = JinjaBuiltins.globals(now: now, timeZone: timeZone)
        let scope = JinjaScope(parent: globals)
        scope.variables = variables
        var out = ""
        let renderer = JinjaRenderer()
        _ = try renderer.execute(nodes, scope, into: &out)
        return out
    }
}

/// Variables visible at one point: a loop iteration, a macro call, the template's top level; each sees those of the
/// scopes around it, and `{% set %}` writes to the innermost one (so a loop's assignments do not outlive the loop).
final class JinjaScope {
    var variables: [String: JinjaValue] = [:]
    let parent: JinjaScope?

    init(parent: JinjaScope?) { self.parent = parent }

    func lookup(_ name: String) -> JinjaValue? {
        var scope: JinjaScope? = self
        while let current = scope {
            if let value = current.variables[name] { return value }
            scope = current.parent
        }
        return nil
    }
}

/// What ends a run of statements early.
private enum Flow { case normal, breakLoop, continueLoop }

private final class JinjaRenderer {
    private var callDepth = 0

    /// Deep enough for any chat template; stops runaway macro recursion before the stack does.
    private static let maxCallDepth = 200

    func execute(_ nodes: [JinjaNode], _ scope: JinjaScope, into out: inout String) throws -> Flow {
        for node in nodes {
            let flow: Flow
            do {
                flow = try execute(node, scope, into: &out)
            } catch var error as JinjaError where error.line == nil {
                error.line = node.line
                throw error
            }
            if flow != .normal { return flow }
        }
        return .normal
    }

    private func execute(_ node: JinjaNode, _ scope: JinjaScope, into out: inout String) throws -> Flow {
        switch node {
        case .text(let text):
            out += text
        case .output(let expression, _):
            out += try evaluate(expression, scope).text
        case let .conditional(branches, otherwise, _):
            for (condition, body) in branches where try evaluate(condition, scope).truthy {
                return try execute(body, scope, into: &out)
            }
            return try execute(otherwise, scope, into: &out)
        case let .loop(targets, iterable, filter, body, otherwise, _):
            var items = try evaluate(iterable, scope).iterated()
            if let filter {
                items = try items.filter { item in
                    let itemScope = JinjaScope(parent: scope)
                    try bind(targets, to: item, in: itemScope)
                    return try evaluate(filter, itemScope).truthy
                }
            }
            guard !items.isEmpty else { return try execute(otherwise, scope, into: &out) }
            for (index, item) in items.enumerated() {
                let iteration = JinjaScope(parent: scope)
                try bind(targets, to: item, in: iteration)
                iteration.variables["loop"] = .namespace(loopObject(index: index, items: items))
                if try execute(body, iteration, into: &out) == .breakLoop { break }
            }
        case let .assign(targets, expression, _):
            try bind(targets, to: try evaluate(expression, scope), in: scope)
        case let .assignAttribute(name, attribute, expression, _):
            guard case .namespace(let namespace) = scope.lookup(name) ?? .undefined("'\(name)' is undefined") else {
                throw JinjaError.runtime("cannot assign attribute on non-namespace object '\(name)'")
            }
            if attribute.hasPrefix("_") { throw JinjaError.runtime("a namespace attribute cannot start with an underscore: '\(attribute)'") }
            namespace.attributes[attribute] = try evaluate(expression, scope)
        case let .assignBlock(name, filters, body, _):
            var text = ""
            _ = try execute(body, scope, into: &text)
            scope.variables[name] = try applyFilters(filters, to: .string(text), scope)
        case let .macro(name, parameters, body, _):
            scope.variables[name] = .callable(macro(name, parameters, body, definedIn: scope))
        case let .callBlock(call, parameters, body, _):
            // The called macro gets the block as its `caller`.
            guard case let .call(callee, arguments) = call else { throw JinjaError.runtime("{% call %} needs a macro call") }
            guard case .callable(let function) = try evaluate(callee, scope) else { throw JinjaError.runtime("{% call %} needs a macro call") }
            var values = try evaluate(arguments, scope)
            values.keywords.append(("caller", .callable(macro("caller", parameters, body, definedIn: scope))))
            out += try function.call(values.positional, values.keywords).text
        case let .filterBlock(filters, body, _):
            var text = ""
            _ = try execute(body, scope, into: &text)
            out += try applyFilters(filters, to: .string(text), scope).text
        case .breakLoop:
            return .breakLoop
        case .continueLoop:
            return .continueLoop
        }
        return .normal
    }

    /// `loop.index`, `loop.first`, … for item `index` of `items`.
    private func loopObject(index: Int, items: [JinjaValue]) -> JinjaNamespace {
        let count = items.count
        var loop = JinjaDict()
        loop["index"] = .int(index + 1)
        loop["index0"] = .int(index)
        loop["revindex"] = .int(count - index)
        loop["revindex0"] = .int(count - index - 1)
        loop["first"] = .bool(index == 0)
        loop["last"] = .bool(index == count - 1)
        loop["length"] = .int(count)
        loop["depth"] = .int(1)
        loop["depth0"] = .int(0)
        loop["previtem"] = index > 0 ? items[index - 1] : .undefined("there is no previous item")
        loop["nextitem"] = index + 1 < count ? items[index + 1] : .undefined("there is no next item")
        loop["cycle"] = .callable(JinjaCallable("loop.cycle") { arguments, _ in
            guard !arguments.isEmpty else { throw JinjaError.runtime("no items for cycling given") }
            return arguments[index % arguments.count]
        })
        return JinjaNamespace(loop)
    }

    /// Assigns `value` to one name, or unpacks a list into several.
    private func bind(_ targets: [String], to value: JinjaValue, in scope: JinjaScope) throws {
        guard targets.count > 1 else {
            scope.variables[targets[0]] = value
            return
        }
        let items = try value.iterated()
        guard items.count == targets.count else {
            throw JinjaError.runtime("cannot unpack \(items.count) values into \(targets.count) names (\(targets.joined(separator: ", ")))")
        }
        for (target, item) in zip(targets, items) { scope.variables[target] = item }
    }

    /// A macro's callable. It holds its scope weakly: the scope holds the macro, and a cycle would outlive the render.
    private func macro(_ name: String, _ parameters: JinjaParameters, _ body: [JinjaNode], definedIn scope: JinjaScope) -> JinjaCallable {
        JinjaCallable(name) { [weak scope] positional, keywords in
            guard let scope else { throw JinjaError.runtime("macro '\(name)' was called after the block defining it ended") }
            guard self.callDepth < Self.maxCallDepth else { throw JinjaError.runtime("macro calls nested deeper than \(Self.maxCallDepth)") }
            self.callDepth += 1
            defer { self.callDepth -= 1 }
            guard positional.count <= parameters.count else {
                throw JinjaError.runtime("macro '\(name)' takes \(parameters.count) arguments, \(positional.count) given")
            }
            let call = JinjaScope(parent: scope)
            for (index, parameter) in parameters.enumerated() {
                if index < positional.count {
                    call.variables[parameter.name] = positional[index]
                } else if let keyword = keywords.first(where: { $0.0 == parameter.name }) {
                    call.variables[parameter.name] = keyword.1
                } else if let defaultValue = parameter.defaultValue {
                    call.variables[parameter.name] = try self.evaluate(defaultValue, call)
                } else {
                    call.variables[parameter.name] = .undefined("parameter '\(parameter.name)' of macro '\(name)' was not provided")
                }
            }
            if let caller = keywords.first(where: { $0.0 == "caller" }) { call.variables["caller"] = caller.1 }
            if let unknown = keywords.first(where: { keyword in keyword.0 != "caller" && !parameters.contains { $0.name == keyword.0 } }) {
                throw JinjaError.runtime("macro '\(name)' takes no keyword argument '\(unknown.0)'")
            }
            var text = ""
            _ = try self.execute(body, call, into: &text)
            return .string(text)
        }
    }

    private func applyFilters(_ filters: [(String, JinjaArguments)], to value: JinjaValue, _ scope: JinjaScope) throws -> JinjaValue {
        var value = value
        for (name, arguments) in filters {
            value = try JinjaBuiltins.filter(name, value, try evaluate(arguments, scope))
        }
        return value
    }

    private func evaluate(_ arguments: JinjaArguments, _ scope: JinjaScope) throws -> JinjaBuiltins.Arguments {
        JinjaBuiltins.Arguments(positional: try arguments.positional.map { try evaluate($0, scope) },
                                keywords: try arguments.keywords.map { ($0.0, try evaluate($0.1, scope)) })
    }

    func evaluate(_ expression: JinjaExpr, _ scope: JinjaScope) throws -> JinjaValue {
        switch expression {
        case .literal(let value):
            return value
        case .name(let name):
            return scope.lookup(name) ?? .undefined("'\(name)' is undefined")
        case .list(let items):
            return .list(try items.map { try evaluate($0, scope) })
        case .dict(let entries):
            return .dict(JinjaDict(try entries.map { (key: try evaluate($0.0, scope), value: try evaluate($0.1, scope)) }))
        case let .attribute(base, name):
            return try JinjaBuiltins.attribute(try evaluate(base, scope), name)
        case let .item(base, key):
            return try JinjaBuiltins.item(try evaluate(base, scope), try evaluate(key, scope))
        case let .slice(base, start, stop, step):
            func bound(_ expression: JinjaExpr?) throws -> Int? {
                guard let expression else { return nil }
                let value = try evaluate(expression, scope)
                if value.isNone { return nil }
                guard let integer = value.integer else { throw JinjaError.runtime("slice indices must be integers or None") }
                return integer
            }
            return try JinjaBuiltins.slice(try evaluate(base, scope), try bound(start), try bound(stop), try bound(step))
        case let .call(callee, arguments):
            let function = try evaluate(callee, scope)
            let values = try evaluate(arguments, scope)
            switch function {
            case .callable(let callable): return try callable.call(values.positional, values.keywords)
            case .undefined(let message): throw JinjaError.undefined(message)
            default: throw JinjaError.runtime("'\(function.typeName)' object is not callable")
            }
        case let .filter(base, name, arguments):
            return try JinjaBuiltins.filter(name, try evaluate(base, scope), try evaluate(arguments, scope))
        case let .test(base, name, arguments, negated):
            let result = try JinjaBuiltins.test(name, try evaluate(base, scope), try evaluate(arguments, scope))
            return .bool(result != negated)
        case let .unary(op, operand):
            let value = try evaluate(operand, scope)
            switch op {
            case "not": return .bool(!value.truthy)
            default: return try JinjaBuiltins.negate(value, op)
            }
        case let .binary(op, left, right):
            let a = try evaluate(left, scope)
            switch op {
            case "and": return try a.truthy ? evaluate(right, scope) : a
            case "or": return try a.truthy ? a : evaluate(right, scope)
            case "~": return .string(a.text + (try evaluate(right, scope)).text)
            default: return try JinjaBuiltins.arithmetic(op, a, try evaluate(right, scope))
            }
        case let .compare(first, rest):
            var left = try evaluate(first, scope)
            for (op, operand) in rest {
                let right = try evaluate(operand, scope)
                guard try JinjaBuiltins.compare(op, left, right) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case let .conditional(condition, then, otherwise):
            if try evaluate(condition, scope).truthy { return try evaluate(then, scope) }
            return try otherwise.map { try evaluate($0, scope) } ?? .undefined("the conditional expression had no else")
        }
    }
}

private extension JinjaNode {
    var line: Int? {
        switch self {
        case .text: nil
        case let .output(_, line), let .conditional(_, _, line), let .loop(_, _, _, _, _, line), let .assign(_, _, line),
             let .assignAttribute(_, _, _, line), let .assignBlock(_, _, _, line), let .macro(_, _, _, line),
             let .callBlock(_, _, _, line), let .filterBlock(_, _, line), let .breakLoop(line), let .continueLoop(line):
            line
        }
    }
}
