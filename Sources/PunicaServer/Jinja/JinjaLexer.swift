/// Why a template could not be parsed or rendered. `line` is the template line, once known.
struct JinjaError: Error, Equatable, CustomStringConvertible {
    enum Kind: Equatable {
        case syntax
        case runtime
        /// The template called `raise_exception(message)`: the conversation is one it refuses.
        case raised
    }

    let kind: Kind
    let message: String
    var line: Int?

    static func syntax(_ message: String, line: Int) -> JinjaError { JinjaError(kind: .syntax, message: message, line: line) }
    static func runtime(_ message: String) -> JinjaError { JinjaError(kind: .runtime, message: message) }
    /// Using an undefined value: `message` says what was undefined ("'x' is undefined").
    static func undefined(_ message: String) -> JinjaError { .runtime(message) }

    var description: String { line.map { "line \($0): \(message)" } ?? message }
}

/// One token inside `{{ }}` or `{% %}`.
struct JinjaToken {
    enum Kind: Equatable { case name, string, integer, float, symbol }
    let kind: Kind
    let text: String
    let line: Int

    func isSymbol(_ symbol: String) -> Bool { kind == .symbol && text == symbol }
    func isName(_ name: String) -> Bool { kind == .name && text == name }
}

/// A template cut into text and tags, with whitespace control already applied.
enum JinjaPiece {
    case text(String)
    /// `{{ … }}`
    case output([JinjaToken], line: Int)
    /// `{% … %}`
    case statement([JinjaToken], line: Int)
}

/// Cuts a template into pieces the way jinja2's lexer does with `trim_blocks` and `lstrip_blocks` (transformers'
/// settings): a block tag or comment alone on its line takes the line's indentation and its newline with it; `{%-`,
/// `-%}` (and the same on `{{ }}` and `{# #}`) strip all whitespace on that side. `{% raw %}` text stays as written.
/// The single newline that ends the template is dropped (jinja2's `keep_trailing_newline=False`).
struct JinjaLexer {
    private let scalars: [Unicode.Scalar]
    private var position = 0
    private var line = 1
    private var pieces: [JinjaPiece] = []
    /// Whether the text about to start is at the start of a line (for lstrip_blocks).
    private var lineStarting = true
    /// A `-` on the previous tag's end: strip the whitespace that starts the next text.
    private var stripNextText = false

    static func pieces(of template: String) throws -> [JinjaPiece] {
        var text = template
        if text.hasSuffix("\n") { text.removeLast() }
        var lexer = JinjaLexer(scalars: Array(text.unicodeScalars))
        try lexer.run()
        return lexer.pieces
    }

    private init(scalars: [Unicode.Scalar]) { self.scalars = scalars }

    private func peek(_ offset: Int = 0) -> Unicode.Scalar? {
        position + offset < scalars.count ? scalars[position + offset] : nil
    }

    private func starts(with text: String, at index: Int) -> Bool {
        var index = index
        for scalar in text.unicodeScalars {
            guard index < scalars.count, scalars[index] == scalar else { return false }
            index += 1
        }
        return true
    }

    private mutating func advance(_ count: Int = 1) {
        for _ in 0..<count where position < scalars.count {
            if scalars[position] == "\n" { line += 1 }
            position += 1
        }
    }

    private mutating func run() throws {
        while position < scalars.count {
            // The text up to the next tag opening.
            let start = position
            while position < scalars.count, !(scalars[position] == "{" && position + 1 < scalars.count && "{%#".unicodeScalars.contains(scalars[position + 1])) {
                advance()
            }
            var text = String.UnicodeScalarView(scalars[start..<position])
            guard position < scalars.count else { emit(text); break }
            let kind = scalars[position + 1]
            let modifier = peek(2)
            let tagLine = line
            // Whitespace control on the text before the tag.
            if modifier == "-" {
                text = String.UnicodeScalarView(text.reversed().drop(while: \.properties.isWhitespace).reversed())
            } else if kind != "{" && modifier != "+" {
                text = lstripped(text)
            }
            emit(text)
            advance(modifier == "-" || modifier == "+" ? 3 : 2)
            switch kind {
            case "#":
                try comment(line: tagLine)
            case "{":
                let tokens = try tagTokens(end: "}}", line: tagLine)
                pieces.append(.output(tokens, line: tagLine))
            default:
                let tokens = try tagTokens(end: "%}", line: tagLine)
                if tokens.count == 1, tokens[0].isName("raw") {
                    try raw(line: tagLine)
                } else {
                    pieces.append(.statement(tokens, line: tagLine))
                }
            }
        }
    }

    /// The text, less the spaces and tabs that start its last line when only they precede a block tag.
    private func lstripped(_ text: String.UnicodeScalarView) -> String.UnicodeScalarView {
        let lastNewline = text.lastIndex(of: "\n")
        guard lastNewline != nil || lineStarting else { return text }
        let lineStart = lastNewline.map { text.index(after: $0) } ?? text.startIndex
        guard text[lineStart...].allSatisfy({ $0 == " " || $0 == "\t" }) else { return text }
        return String.UnicodeScalarView(text[..<lineStart])
    }

    private mutating func emit(_ text: String.UnicodeScalarView) {
        var text = Substring.UnicodeScalarView(text)
        if stripNextText {
            text = Substring.UnicodeScalarView(text.drop(while: \.properties.isWhitespace))
        }
        stripNextText = false
        if !text.isEmpty { pieces.append(.text(String(text))) }
    }

    /// After a tag's closing: `-` strips the next text; trim_blocks drops the newline after a block tag or comment.
    private mutating func closeTag(strip: Bool, block: Bool) {
        lineStarting = false
        if strip {
            stripNextText = true
        } else if block, peek() == "\n" {
            advance()
            lineStarting = true
        }
    }

    private mutating func comment(line: Int) throws {
        while position < scalars.count {
            if starts(with: "-#}", at: position) { advance(3); closeTag(strip: true, block: true); return }
            if starts(with: "#}", at: position) { advance(2); closeTag(strip: false, block: true); return }
            advance()
        }
        throw JinjaError.syntax("comment {# is not closed by #}", line: line)
    }

    /// `{% raw %}…{% endraw %}`: the text between as it is.
    private mutating func raw(line: Int) throws {
        let start = position
        while position < scalars.count {
            if scalars[position] == "{" && peek(1) == "%" {
                let tagStart = position
                let strips = peek(2) == "-"
                var index = position + (strips || peek(2) == "+" ? 3 : 2)
                while index < scalars.count, scalars[index] == " " || scalars[index] == "\t" || scalars[index] == "\n" { index += 1 }
                if starts(with: "endraw", at: index) {
                    var text = String.UnicodeScalarView(scalars[start..<tagStart])
                    if strips { text = String.UnicodeScalarView(text.reversed().drop(while: \.properties.isWhitespace).reversed()) }
                    emit(text)
                    advance(index + 6 - position)
                    while peek() == " " || peek() == "\t" || peek() == "\n" { advance() }
                    if starts(with: "-%}", at: position) { advance(3); closeTag(strip: true, block: true); return }
                    if starts(with: "%}", at: position) { advance(2); closeTag(strip: false, block: true); return }
                    throw JinjaError.syntax("endraw tag is not closed by %}", line: self.line)
                }
            }
            advance()
        }
        throw JinjaError.syntax("{% raw %} has no {% endraw %}", line: line)
    }

    private static let symbols = ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "(", ")", "[", "]", "{", "}",
                                  ",", ".", ":", "|", "=", "<", ">"]

    /// The tokens of a tag up to `end` (`}}` or `%}`, optionally after `-` or `+`).
    private mutating func tagTokens(end: String, line: Int) throws -> [JinjaToken] {
        var tokens: [JinjaToken] = []
        while true {
            while let scalar = peek(), scalar.properties.isWhitespace { advance() }
            guard let scalar = peek() else {
                throw JinjaError.syntax("tag opened here is not closed by \(end)", line: line)
            }
            if (scalar == "-" || scalar == "+") && starts(with: end, at: position + 1) {
                advance(1 + end.unicodeScalars.count)
                closeTag(strip: scalar == "-", block: end == "%}")
                return tokens
            }
            if starts(with: end, at: position) {
                advance(end.unicodeScalars.count)
                closeTag(strip: false, block: end == "%}")
                return tokens
            }
            let tokenLine = self.line
            if scalar == "'" || scalar == "\"" {
                tokens.append(JinjaToken(kind: .string, text: try stringLiteral(quote: scalar), line: tokenLine))
            } else if scalar.properties.isAlphabetic || scalar == "_" {
                let start = position
                while let next = peek(), next.properties.isAlphabetic || next.properties.numericType != nil || next == "_" { advance() }
                tokens.append(JinjaToken(kind: .name, text: String(String.UnicodeScalarView(scalars[start..<position])), line: tokenLine))
            } else if ("0"..."9").contains(scalar) {
                tokens.append(number(afterDot: tokens.last?.isSymbol(".") ?? false))
            } else if let symbol = Self.symbols.first(where: { starts(with: $0, at: position) }) {
                advance(symbol.unicodeScalars.count)
                tokens.append(JinjaToken(kind: .symbol, text: symbol, line: tokenLine))
            } else {
                throw JinjaError.syntax("unexpected character \(pythonRepr(String(scalar)))", line: tokenLine)
            }
        }
    }

    /// An integer or float literal (underscores allowed). After `.` only an integer (`x.0` is an attribute).
    private mutating func number(afterDot: Bool) -> JinjaToken {
        let tokenLine = line
        var text = ""
        func digits() { while let next = peek(), ("0"..."9").contains(next) || next == "_" { if next != "_" { text.unicodeScalars.append(next) }; advance() } }
        digits()
        var isFloat = false
        if !afterDot, peek() == ".", let next = peek(1), ("0"..."9").contains(next) {
            isFloat = true
            text += "."
            advance()
            digits()
        }
        if !afterDot, peek() == "e" || peek() == "E",
           let next = peek(1), ("0"..."9").contains(next) || ((next == "+" || next == "-") && peek(2).map { ("0"..."9").contains($0) } == true) {
            isFloat = true
            text += "e"
            advance()
            if peek() == "+" || peek() == "-" { text.unicodeScalars.append(peek()!); advance() }
            digits()
        }
        return JinjaToken(kind: isFloat ? .float : .integer, text: text, line: tokenLine)
    }

    /// A quoted string with Python's escapes (`\n`, `\t`, `\\`, `\'`, `\uXXXX`…; others stay as written).
    private mutating func stringLiteral(quote: Unicode.Scalar) throws -> String {
        let startLine = line
        advance()
        var out = String.UnicodeScalarView()
        while let scalar = peek() {
            advance()
            if scalar == quote { return String(out) }
            guard scalar == "\\", let escape = peek() else { out.append(scalar); continue }
            advance()
            switch escape {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            case "0": out.append("\0")
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "v": out.append("\u{0B}")
            case "\\", "'", "\"": out.append(escape)
            case "\n": break
            case "x", "u", "U":
                let count = escape == "x" ? 2 : escape == "u" ? 4 : 8
                let digits = String(String.UnicodeScalarView((0..<count).compactMap { peek($0) }))
                guard digits.unicodeScalars.count == count, let code = UInt32(digits, radix: 16), let decoded = Unicode.Scalar(code) else {
                    throw JinjaError.syntax("invalid \\\(escape) escape in a string", line: line)
                }
                advance(count)
                out.append(decoded)
            default:
                out.append("\\")
                out.append(escape)
            }
        }
        throw JinjaError.syntax("string opened here is not closed", line: startLine)
    }
}
