import ArgumentParser

@main
struct Punica: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "punica",
        abstract: "Serve many LoRA fine-tunes of one Llama-family model in one batch.",
        subcommands: [Generate.self, Serve.self, Demo.self, Bench.self, RenderCapture.self])
}
