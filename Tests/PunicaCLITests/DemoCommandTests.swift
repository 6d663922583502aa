import Foundation
import Testing
import TestSupport

@Suite struct DemoCommandTests {
    let model = Fixtures.repositoryPath("models")

    /// With stdout piped, every pane (the base model and each bundled adapter) prints its text as lines prefixed with
    /// its name, then one summary line per pane and a total, and the command exits once all are done.
    @Test func plainModePrintsEveryPaneThenASummary() throws {
        let run = try punica(["demo", "--model", model, "--max-tokens", "4", "--seed", "3", "--prompt", "python=import os"])
        #expect(run.status == 0, "\(run.error)")
        let lines = run.output.split(separator: "\n")
        for pane in ["base", "fortunes", "manpages", "python", "scripture"] {
            #expect(lines.contains { $0.hasPrefix("[\(pane)] ") }, "no text from \(pane)")
            #expect(lines.contains { $0.hasPrefix("[summary] \(pane) ") && $0.contains(" 4 tokens in ") }, "no summary of \(pane)")
        }
        #expect(lines.contains { $0.hasPrefix("[python] import os") })
        #expect(lines.last?.hasPrefix("[summary] total") == true && lines.last?.contains(" 20 tokens in ") == true)
    }

    @Test func promptForAnUnknownPaneNamesThePanes() throws {
        let run = try punica(["demo", "--model", model, "--prompt", "poetry=Roses are red"])
        #expect(run.status != 0)
        #expect(run.error.contains("poetry") && run.error.contains("base, fortunes, manpages, python, scripture"), "\(run.error)")
    }

    /// The README's picture is made this way from a tmux capture: one 12×22-pixel cell per character at scale 2,
    /// plus a one-cell border.
    @Test func renderCaptureDrawsTheCapturedScreen() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("capture-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let capture = directory.appendingPathComponent("screen.txt").path, image = directory.appendingPathComponent("screen.png").path
        try "\u{1B}[30m\u{1B}[46m punica demo \u{1B}[39m\u{1B}[49m\nplain text\n".write(toFile: capture, atomically: true, encoding: .utf8)
        let run = try punica(["render-capture", capture, image])
        #expect(run.status == 0, "\(run.error)")
        let png = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)))
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        #expect(bigEndian(png, at: 16) == 12 * (13 + 2) && bigEndian(png, at: 20) == 22 * 2 + 2 * 12)
    }
}

/// The 4-byte big-endian number at `offset` (PNG's IHDR width is at 16, height at 20).
func bigEndian(_ bytes: [UInt8], at offset: Int) -> Int {
    bytes[offset ..< offset + 4].reduce(0) { $0 << 8 | Int($1) }
}
