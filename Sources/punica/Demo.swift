import ArgumentParser
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PunicaEngine

/// `punica demo`: Punica's terminal demo. One engine, one request per pane (the base model and every adapter),
/// all streaming at once: every step of the engine runs them in one batch.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watch the base model and every adapter generate side by side, served in one batch by one engine.",
        discussion: """
        Keys: r restarts every pane, q or Ctrl-C quits. When stdout is not a terminal, prints each pane's text as \
        lines prefixed with its name, then tokens/s per pane and in total, and exits when every pane is done.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var parallel: ParallelOptions

    @Option(name: .customLong("prompt"), help: ArgumentHelp(
        "The prompt of one pane: base, or an adapter's name (repeatable). Other panes use a prompt in their adapter's style.",
        valueName: "name=text"))
    var prompts: [String] = []

    @Option(help: "Tokens each pane generates.") var maxTokens = 200
    @Option(help: "Sampling temperature (0: greedy).") var temperature: Float = 0.8
    @Option(help: "Nucleus sampling.") var topP: Float = 0.95
    @Option(help: "Random seed, for the same texts every run.") var seed: UInt64?
    @Flag(help: "End a pane at the model's end-of-text token, instead of going on with a new text until --max-tokens.")
    var stopAtEOS = false

    func validate() throws {
        try validateSampling(sampling)
    }

    func run() async throws {
        let (model, tokenizer, adapters) = try modelOptions.load(tensorParallelSize: parallel.tensorParallelSize)
        let engine = try Engine(model: model, tokenizer: tokenizer)
        for (name, directory) in adapters { try await engine.registerAdapter(name: name, directory: directory) }
        let demo = DemoSession(engine: engine, panes: try DemoPane.panes(adapters: engine.adapterNames(), prompts: prompts),
                               sampling: sampling)
        if isatty(STDOUT_FILENO) == 1 {
            await demo.runFullScreen(title: "punica demo: one engine, \(demo.panes.count) generations in one batch"
                                     + " (model \(modelOptions.model), \(modelOptions.device.device))")
        } else {
            try await demo.runPlain()
        }
        await engine.drain()
    }

    private var sampling: SamplingParameters {
        var sampling = SamplingParameters()
        sampling.maxTokens = maxTokens
        sampling.temperature = temperature
        sampling.topP = topP
        sampling.seed = seed
        sampling.ignoreEOS = !stopAtEOS
        return sampling
    }
}

/// One pane: a request to the base model (adapter nil) or to one adapter.
struct DemoPane: Sendable {
    let name: String
    let adapter: String?
    let prompt: String

    /// Prompts that show off each bundled adapter's style; the base model and other adapters get a neutral one.
    static let stylePrompts = [
        "scripture": "And God said,",
        "python": "def read_config(path):",
        "fortunes": "A wise man",
        "manpages": "NAME\n       ls",
    ]
    static let neutralPrompt = "The"

    /// The base pane then one per adapter; `prompts` (`name=text`) replace the defaults.
    static func panes(adapters: [String], prompts: [String]) throws -> [DemoPane] {
        var chosen: [String: String] = [:]
        for pair in prompts {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw ValidationError("--prompt \(pair): expected NAME=TEXT")
            }
            let name = String(pair[..<equals])
            guard name == "base" || adapters.contains(name) else {
                throw ValidationError("--prompt \(name): no such pane (panes: base, \(adapters.joined(separator: ", ")))")
            }
            chosen[name] = String(pair[pair.index(after: equals)...])
        }
        let base = DemoPane(name: "base", adapter: nil, prompt: chosen["base"] ?? neutralPrompt)
        return [base] + adapters.map { DemoPane(name: $0, adapter: $0, prompt: chosen[$0] ?? stylePrompts[$0] ?? neutralPrompt) }
    }
}

/// What a pane has generated so far in the current round.
struct PaneProgress: Sendable {
    var text = ""
    var tokens = 0
    var started = ContinuousClock.now
    var finished: ContinuousClock.Instant?
    var outcome: String?

    var seconds: Double { (started.duration(to: finished ?? .now)).seconds }
    var tokensPerSecond: Double { seconds > 0 ? Double(tokens) / seconds : 0 }

    /// Adds the event to the pane and returns the text it adds: an end-of-text token (generated when EOS is
    /// ignored) shows as a blank line before the next text.
    mutating func record(_ event: GenerationEvent, endOfText: Set<Int>) -> String {
        switch event {
        case let .token(id, text, _, _):
            tokens += 1
            let added = endOfText.contains(id) ? text + "\n\n" : text
            self.text += added
            return added
        case .prompt:
            return ""
        case let .finished(reason, _, message):
            finished = .now
            outcome = message.map { "\(reason.rawValue): \($0)" } ?? reason.rawValue
            return ""
        }
    }
}

/// The panes' requests on one engine, shown full screen or printed line by line.
struct DemoSession: Sendable {
    let engine: any GenerationService
    let panes: [DemoPane]
    let sampling: SamplingParameters

    /// Submits every pane's request of `round`; a refused request becomes that pane's outcome.
    private func submit(round: Int) -> [Result<AsyncStream<GenerationEvent>, RequestError>] {
        panes.enumerated().map { index, pane in
            var sampling = self.sampling
            sampling.seed = sampling.seed.map { $0 &+ UInt64(round * panes.count + index) }
            let request = EngineRequest(id: requestID(pane, round: round), promptIDs: engine.tokenizer.encode(pane.prompt),
                                        adapter: pane.adapter, sampling: sampling)
            return Result { () throws(RequestError) in try engine.submit(request) }
        }
    }

    private func requestID(_ pane: DemoPane, round: Int) -> String { "demo-\(round)-\(pane.name)" }

    private var endOfText: Set<Int> { Set(engine.tokenizer.eosTokenIDs) }

    /// Prints `[name] line` for each line of each pane as it completes, then a summary; returns when all are done.
    func runPlain() async throws {
        let streams = try submit(round: 0).map { try $0.get() }
        let (started, endOfText) = (ContinuousClock.now, self.endOfText)
        let results = await withTaskGroup(of: (Int, PaneProgress, Int).self) { group in
            for (index, stream) in streams.enumerated() {
                let pane = panes[index]
                group.addTask {
                    var progress = PaneProgress(started: started), line = pane.prompt, largestBatch = 0
                    for await event in stream {
                        line += progress.record(event, endOfText: endOfText)
                        largestBatch = max(largestBatch, engine.stats().lastStepSequences)
                        while let newline = line.firstIndex(of: "\n") {
                            Self.printLine("[\(pane.name)] \(line[..<newline])")
                            line = String(line[line.index(after: newline)...])
                        }
                    }
                    if !line.isEmpty { Self.printLine("[\(pane.name)] \(line)") }
                    return (index, progress, largestBatch)
                }
            }
            return await group.reduce(into: [Int: (PaneProgress, Int)]()) { $0[$1.0] = ($1.1, $1.2) }
        }
        let seconds = started.duration(to: .now).seconds
        let nameWidth = panes.map(\.name.count).max() ?? 0
        var total = 0
        for (index, pane) in panes.enumerated() {
            let progress = results[index]!.0
            total += progress.tokens
            Self.printLine("[summary] \(pane.name.padded(to: nameWidth)) \(progress.tokens) tokens in \(fixed(progress.seconds, 2)) s: "
                           + "\(fixed(progress.tokensPerSecond, 1)) tok/s (\(progress.outcome ?? "unfinished"))")
        }
        Self.printLine("[summary] \("total".padded(to: nameWidth)) \(total) tokens in \(fixed(seconds, 2)) s: "
                       + "\(fixed(Double(total) / seconds, 1)) tok/s; \(engine.stats().steps) engine steps, "
                       + "up to \(results.values.map(\.1).max() ?? 0) sequences per step")
    }

    private static func printLine(_ line: String) {
        print(line)
        fflush(stdout)  // a pipe is block-buffered: show each line as it completes
    }

    /// The full-screen view, redrawn about 15 times a second until q or Ctrl-C; r cancels and resubmits every pane.
    func runFullScreen(title: String) async {
        let terminal = RawTerminal()
        defer { terminal.restore() }
        let board = DemoBoard(paneCount: panes.count, endOfText: endOfText)
        var round = 0
        var consumers = await start(round: round, board: board)
        while true {
            let keys = terminal.pendingKeys()
            if keys.contains(where: { $0 == UInt8(ascii: "q") || $0 == 3 }) { break }
            if keys.contains(UInt8(ascii: "r")) {
                cancel(round: round, consumers: consumers)
                round += 1
                consumers = await start(round: round, board: board)
            }
            let size = terminal.size
            let view = DemoView(title: title, panes: panes, progress: await board.panes, stats: engine.stats())
            terminal.emit(view.draw(columns: size.columns, rows: size.rows).ansiFrame())
            try? await Task.sleep(for: .milliseconds(66))
        }
        cancel(round: round, consumers: consumers)
    }

    /// Submits the round's requests and starts one task per pane that streams its events into the board.
    private func start(round: Int, board: DemoBoard) async -> [Task<Void, Never>] {
        await board.reset(round: round)
        return submit(round: round).enumerated().map { index, submitted in
            Task {
                switch submitted {
                case let .success(stream):
                    for await event in stream { await board.record(event, pane: index, round: round) }
                case let .failure(error):
                    await board.record(.finished(reason: .error, usage: Usage(promptTokens: 0, completionTokens: 0),
                                                 message: error.description), pane: index, round: round)
                }
            }
        }
    }

    private func cancel(round: Int, consumers: [Task<Void, Never>]) {
        for pane in panes { engine.cancel(id: requestID(pane, round: round)) }
        consumers.forEach { $0.cancel() }
    }
}

/// The current round's progress of every pane, written by the panes' stream consumers and read by the view.
actor DemoBoard {
    private(set) var panes: [PaneProgress]
    private var round = 0
    private let endOfText: Set<Int>

    init(paneCount: Int, endOfText: Set<Int>) {
        panes = [PaneProgress](repeating: PaneProgress(), count: paneCount)
        self.endOfText = endOfText
    }

    func reset(round: Int) {
        self.round = round
        panes = [PaneProgress](repeating: PaneProgress(), count: panes.count)
    }

    /// Events of an earlier round (still arriving after a restart) are dropped.
    func record(_ event: GenerationEvent, pane: Int, round: Int) {
        if round == self.round { _ = panes[pane].record(event, endOfText: endOfText) }
    }
}

/// One frame of the full-screen demo: a title bar, the panes in a grid (each a header with its numbers, then its
/// prompt and text, wrapped, newest lines at the bottom), and a status bar with the engine's numbers.
struct DemoView {
    let title: String
    let panes: [DemoPane]
    let progress: [PaneProgress]
    let stats: EngineStats

    /// Each pane's color (its header, its prompt): base in bright white, adapters in bright yellow, blue, green,
    /// magenta, cyan, red, round and round.
    private func color(_ pane: Int) -> UInt8 { pane == 0 ? 15 : [11, 12, 10, 13, 14, 9][(pane - 1) % 6] }

    func draw(columns: Int, rows: Int) -> TerminalCanvas {
        var canvas = TerminalCanvas(width: columns, height: rows)
        canvas.put(" " + title, row: 0, column: 0, width: columns, style: CellStyle(foreground: 0, background: 6))

        let perRow = min(panes.count, 3, max(1, columns / 36))
        let gridRows = (panes.count + perRow - 1) / perRow
        let areaHeight = rows - 2
        for gridRow in 0..<gridRows {
            let top = 1 + gridRow * areaHeight / gridRows, bottom = 1 + (gridRow + 1) * areaHeight / gridRows
            let members = Array(gridRow * perRow ..< min((gridRow + 1) * perRow, panes.count))
            for (position, pane) in members.enumerated() {
                let left = position * columns / members.count, right = (position + 1) * columns / members.count
                // One blank column between panes and one blank row between grid rows.
                let width = right - left - (position < members.count - 1 ? 1 : 0)
                let height = bottom - top - (gridRow < gridRows - 1 ? 1 : 0)
                drawPane(pane, into: &canvas, top: top, left: left, width: width, height: height)
            }
        }

        let total = progress.reduce(0) { $0 + $1.tokens }
        let seconds = progress.map(\.seconds).max() ?? 0
        let status = " step \(stats.steps)  batch \(stats.lastStepSequences) sequences, \(stats.lastStepTokens) tokens  "
            + "total \(fixed(seconds > 0 ? Double(total) / seconds : 0, 1)) tok/s  \(stats.running) running, \(stats.waiting) waiting"
        let keys = "  r restart  q quit "
        let barStyle = CellStyle(foreground: 0, background: 7)
        canvas.put(status, row: rows - 1, column: 0, width: max(0, columns - keys.count), style: barStyle)
        canvas.put(keys, row: rows - 1, column: max(0, columns - keys.count), width: keys.count, style: barStyle)
        return canvas
    }

    private func drawPane(_ index: Int, into canvas: inout TerminalCanvas, top: Int, left: Int, width: Int, height: Int) {
        guard width > 0, height > 0 else { return }
        let pane = panes[index], state = progress[index], color = color(index)
        let numbers = "\(state.tokens) tok  \(fixed(state.tokensPerSecond, 1)) tok/s" + (state.outcome.map { "  \($0)" } ?? "") + " "
        let name = " " + pane.name
        canvas.put(name + String(repeating: " ", count: max(1, width - name.count - numbers.count)) + numbers,
                   row: top, column: left, width: width, style: CellStyle(foreground: 0, background: color))

        var lines = Self.wrap([(pane.prompt, CellStyle(foreground: color)), (state.text, .plain)], width: width)
        if state.finished == nil {
            let cursor = TerminalCanvas.Cell(character: " ", style: CellStyle(background: color))
            if lines[lines.count - 1].count < width { lines[lines.count - 1].append(cursor) } else { lines.append([cursor]) }
        }
        for (row, line) in lines.suffix(height - 1).enumerated() {
            for (column, cell) in line.enumerated() { canvas.put(cell, row: top + 1 + row, column: left + column) }
        }
    }

    /// Styled text as lines of at most `width` cells: breaks at newlines, expands tabs to 8-column stops, wraps at
    /// the last space of a full line (or mid-word when there is none), and drops other control characters.
    static func wrap(_ segments: [(text: String, style: CellStyle)], width: Int) -> [[TerminalCanvas.Cell]] {
        var lines: [[TerminalCanvas.Cell]] = [[]]
        for (text, style) in segments {
            for character in text {
                switch character {
                case "\n", "\r\n":
                    lines.append([])
                case "\t":
                    for _ in 0..<(8 - lines[lines.count - 1].count % 8) {
                        append(TerminalCanvas.Cell(character: " ", style: style), to: &lines, width: width)
                    }
                default:
                    if let ascii = character.asciiValue, ascii < 32 || ascii == 127 { continue }
                    append(TerminalCanvas.Cell(character: character, style: style), to: &lines, width: width)
                }
            }
        }
        return lines
    }

    /// Adds a cell to the last line; a full line breaks at the cell when it is a space (which is dropped), else at
    /// the line's last space (dropped too), else before the cell.
    private static func append(_ cell: TerminalCanvas.Cell, to lines: inout [[TerminalCanvas.Cell]], width: Int) {
        if lines[lines.count - 1].count >= width {
            if cell.character == " " { return lines.append([]) }
            let full = lines.removeLast()
            if let space = full.lastIndex(where: { $0.character == " " }), space > 0 {
                lines += [Array(full[..<space]), Array(full[(space + 1)...])]
            } else {
                lines += [full, []]
            }
        }
        lines[lines.count - 1].append(cell)
    }
}

extension String {
    /// Left-aligned in a field of `width` characters.
    func padded(to width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
}
