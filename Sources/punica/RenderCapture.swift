import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `punica render-capture`: draws a captured terminal screen (`tmux capture-pane -e -p`) as a PNG with the
/// built-in bitmap font; how the README's picture of the demo is made from a real terminal run.
struct RenderCapture: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render-capture",
        abstract: "Render a terminal capture with ANSI colors (tmux capture-pane -e -p) to a PNG image.",
        shouldDisplay: false)

    @Argument(help: "The captured text.") var capture: String
    @Argument(help: "The PNG to write.") var output: String
    @Option(help: "Pixels per font pixel.") var scale = 2

    func run() throws {
        guard let data = FileManager.default.contents(atPath: capture) else { throw ValidationError("\(capture): cannot be read") }
        let canvas = TerminalCanvas(ansi: String(decoding: data, as: UTF8.self))
        guard canvas.width > 0 else { throw ValidationError("\(capture): nothing to draw") }
        try Data(canvas.raster(scale: scale).png()).write(to: URL(fileURLWithPath: output))
    }
}
