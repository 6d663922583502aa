/// Colors of a terminal cell: one of the 16 ANSI colors (0–7 normal, 8–15 bright) or the terminal's default.
struct CellStyle: Equatable {
    var foreground: UInt8?
    var background: UInt8?

    static let plain = CellStyle()

    /// The SGR sequence that sets exactly this style.
    var sgr: String {
        let foregroundCode = foreground.map { $0 < 8 ? 30 + Int($0) : 90 + Int($0) - 8 } ?? 39
        let backgroundCode = background.map { $0 < 8 ? 40 + Int($0) : 100 + Int($0) - 8 } ?? 49
        return "\u{1B}[0;\(foregroundCode);\(backgroundCode)m"
    }
}

/// A screen of character cells: the demo draws a frame into it and writes it with ANSI escape codes; a captured
/// terminal (`tmux capture-pane -e -p`) is read back into one and rendered to an image for the README.
struct TerminalCanvas {
    struct Cell: Equatable {
        var character: Character = " "
        var style = CellStyle.plain
    }

    let width: Int
    let height: Int
    private var cells: [Cell]

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
        cells = [Cell](repeating: Cell(), count: width * height)
    }

    subscript(row: Int, column: Int) -> Cell { cells[row * width + column] }

    /// Writes `text` from (row, column), clipped to `width` cells (and the screen), then fills the rest of those
    /// cells with spaces in the same style.
    mutating func put(_ text: String, row: Int, column: Int, width limit: Int, style: CellStyle) {
        guard (0..<height).contains(row) else { return }
        var characters = Array(text).prefix(limit).makeIterator()
        for offset in 0..<max(limit, 0) where (0..<width).contains(column + offset) {
            cells[row * width + column + offset] = Cell(character: characters.next() ?? " ", style: style)
        }
    }

    mutating func put(_ cell: Cell, row: Int, column: Int) {
        if (0..<height).contains(row) && (0..<width).contains(column) { cells[row * width + column] = cell }
    }

    /// The whole screen as one write: each row addressed by cursor position, a style change only where the style
    /// changes, so nothing is cleared and nothing flickers.
    func ansiFrame() -> String {
        var out = ""
        for row in 0..<height {
            out += "\u{1B}[\(row + 1);1H"
            var current: CellStyle?
            for column in 0..<width {
                let cell = self[row, column]
                if cell.style != current {
                    out += cell.style.sgr
                    current = cell.style
                }
                out.append(cell.character)
            }
        }
        return out + "\u{1B}[0m"
    }

    /// Reads lines of text with SGR escape codes (as `tmux capture-pane -e -p` prints them): as many rows as lines,
    /// as many columns as the longest line. A style lasts until changed, across line ends as in tmux's captures.
    /// Understood: reset, the 16 foreground and background colors (30–37, 90–97, 40–47, 100–107, and 38;5;n /
    /// 48;5;n with n < 16) and the default colors (39, 49); other codes and escape sequences are skipped.
    init(ansi text: String) {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        var style = CellStyle.plain
        let rows = lines.map { line in
            var cells: [Cell] = []
            var characters = line.makeIterator()
            while let character = characters.next() {
                guard character == "\u{1B}" else {
                    cells.append(Cell(character: character, style: style))
                    continue
                }
                guard characters.next() == "[" else { continue }
                var parameters = "", final: Character?
                while let next = characters.next() {
                    if next.isLetter { final = next; break }
                    parameters.append(next)
                }
                if final == "m" { Self.apply(parameters, to: &style) }
            }
            return cells
        }
        self.init(width: rows.map(\.count).max() ?? 0, height: rows.count)
        for (row, cells) in rows.enumerated() {
            for (column, cell) in cells.enumerated() { put(cell, row: row, column: column) }
        }
    }

    private static func apply(_ parameters: String, to style: inout CellStyle) {
        var codes = parameters.split(separator: ";", omittingEmptySubsequences: false).map { Int($0) ?? 0 }.makeIterator()
        while let code = codes.next() {
            switch code {
            case 0: style = .plain
            case 30...37: style.foreground = UInt8(code - 30)
            case 90...97: style.foreground = UInt8(code - 90 + 8)
            case 39: style.foreground = nil
            case 40...47: style.background = UInt8(code - 40)
            case 100...107: style.background = UInt8(code - 100 + 8)
            case 49: style.background = nil
            case 38, 48:
                // 38;5;n (256 colors) or 38;2;r;g;b (true color): only the 16 basic colors are kept.
                let mode = codes.next()
                let color = mode == 5 ? codes.next() : nil
                if mode == 2 { for _ in 0..<3 { _ = codes.next() } }
                let basic = color.flatMap { $0 < 16 ? UInt8($0) : nil }
                if code == 38 { style.foreground = basic } else { style.background = basic }
            default: break
            }
        }
    }

    /// The screen as an image: each cell `BitmapFont.advance × lineHeight` pixels, times `scale`, in a dark theme.
    func raster(scale: Int) -> Raster {
        let lineHeight = BitmapFont.glyphHeight + 2
        let (cellWidth, cellHeight) = (BitmapFont.advance * scale, lineHeight * scale)
        var image = Raster(width: width * cellWidth + 2 * cellWidth, height: height * cellHeight + 2 * cellWidth,
                           background: Self.defaultBackground)
        for row in 0..<height {
            for column in 0..<width {
                let cell = self[row, column]
                let (x, y) = (cellWidth + column * cellWidth, cellWidth + row * cellHeight)
                if let background = cell.style.background {
                    image.fill(x: x, y: y, width: cellWidth, height: cellHeight, Self.palette[Int(background)])
                }
                let foreground = cell.style.foreground.map { Self.palette[Int($0)] } ?? Self.defaultForeground
                image.text(String(cell.character), x: x, y: y + scale, foreground, scale: scale)
            }
        }
        return image
    }

    private static let defaultForeground = RGB(0xD4D4D4), defaultBackground = RGB(0x1B1D23)
    /// The 16 ANSI colors, normal then bright (a dark terminal theme).
    private static let palette: [RGB] = [
        0x1B1D23, 0xE06C75, 0x98C379, 0xE5C07B, 0x61AFEF, 0xC678DD, 0x56B6C2, 0xABB2BF,
        0x5C6370, 0xFF7B86, 0xB5E890, 0xFFD68A, 0x7CC4FF, 0xDE97F0, 0x78D6E0, 0xFFFFFF,
    ].map(RGB.init)
}
