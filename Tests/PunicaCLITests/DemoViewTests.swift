import Foundation
import PunicaEngine
import Testing
@testable import punica

@Suite struct DemoViewTests {
    func text(_ lines: [[TerminalCanvas.Cell]]) -> [String] { lines.map { String($0.map(\.character)) } }

    @Test func wrapBreaksAtSpacesNewlinesAndTabs() {
        #expect(text(DemoView.wrap([("hello world again", .plain)], width: 11)) == ["hello world", "again"])
        #expect(text(DemoView.wrap([("one\ntwo", .plain)], width: 10)) == ["one", "two"])
        #expect(text(DemoView.wrap([("a\tb", .plain)], width: 20)) == ["a       b"])
        #expect(text(DemoView.wrap([("abcdefghij", .plain)], width: 4)) == ["abcd", "efgh", "ij"])
        #expect(text(DemoView.wrap([("bell\u{07}s", .plain)], width: 10)) == ["bells"])
    }

    @Test func wrapKeepsEachSegmentsStyle() {
        let prompt = CellStyle(foreground: 11)
        let lines = DemoView.wrap([("def f", prompt), ("(x):", .plain)], width: 20)
        #expect(lines[0].map(\.style) == Array(repeating: prompt, count: 5) + Array(repeating: .plain, count: 4))
    }

    @Test func captureColorsAreReadBack() {
        let canvas = TerminalCanvas(ansi: "\u{1B}[30m\u{1B}[46mAB\u{1B}[39m\u{1B}[49mC\u{1B}[91mD\u{1B}[0mE\u{1B}[38;5;4mF\u{1B}[2K\nG\u{1B}[107mH\n")
        #expect(canvas.width == 6 && canvas.height == 2)
        #expect((0..<6).map { canvas[0, $0].character } == ["A", "B", "C", "D", "E", "F"])
        #expect(canvas[0, 1].style == CellStyle(foreground: 0, background: 6))
        #expect(canvas[0, 2].style == .plain && canvas[0, 3].style == CellStyle(foreground: 9))
        #expect(canvas[0, 4].style == .plain && canvas[0, 5].style == CellStyle(foreground: 4))
        // A style carries over the line end; rows shorter than the longest are padded with plain spaces.
        #expect(canvas[1, 0] == TerminalCanvas.Cell(character: "G", style: CellStyle(foreground: 4)))
        #expect(canvas[1, 1].style == CellStyle(foreground: 4, background: 15) && canvas[1, 2] == TerminalCanvas.Cell())
    }

    func view(progress update: (inout [PaneProgress]) -> Void = { _ in }) -> DemoView {
        let panes = try! DemoPane.panes(adapters: ["fortunes", "manpages", "python", "scripture"], prompts: [])
        var progress = [PaneProgress](repeating: PaneProgress(), count: panes.count)
        update(&progress)
        let stats = EngineStats(running: 5, waiting: 0, kvPagesUsed: 5, kvPagesTotal: 100, requestsPerAdapter: [:],
                                generatedTokensPerSecond: 0, steps: 42, lastStepSequences: 5, lastStepTokens: 5)
        return DemoView(title: "demo", panes: panes, progress: progress, stats: stats)
    }

    func rows(_ canvas: TerminalCanvas) -> [String] {
        (0..<canvas.height).map { row in String((0..<canvas.width).map { canvas[row, $0].character }) }
    }

    /// Five panes on 120 columns: three in the first grid row, two in the second; title on top, status at the bottom.
    @Test func frameShowsEveryPaneWithItsNumbers() {
        let frame = rows(view { _ = $0[3].record(.token(id: 5, text: " return 1", logprob: nil, top: []), endOfText: [2]) }
            .draw(columns: 120, rows: 30))
        #expect(frame[0].hasPrefix(" demo"))
        #expect(frame[1].contains(" base ") && frame[1].contains(" fortunes ") && frame[1].contains(" manpages "))
        #expect(frame[15].contains(" python ") && frame[15].contains("1 tok") && frame[15].contains(" scripture "))
        #expect(frame[16].hasPrefix("def read_config(path): return 1"))
        #expect(frame[29].contains("step 42") && frame[29].contains("batch 5 sequences") && frame[29].hasSuffix("q quit "))
    }

    /// An end-of-text token (generated when EOS is ignored) starts the next text after a blank line.
    @Test func endOfTextShowsAsABlankLine() {
        let canvas = view { _ = $0[0].record(.token(id: 2, text: "", logprob: nil, top: []), endOfText: [2]) }.draw(columns: 40, rows: 40)
        let frame = rows(canvas)
        #expect(frame[2].hasPrefix("The ") && frame[3].trimmingCharacters(in: .whitespaces).isEmpty)
        #expect(canvas[4, 0].style.background == 15, "the cursor, where the next text begins")
    }

    @Test func narrowTerminalKeepsTheKeysVisible() {
        let frame = rows(view().draw(columns: 30, rows: 12))
        #expect(frame[11].hasSuffix("r restart  q quit ") && frame[11].hasPrefix(" step 42"))
    }
}
