import ArgumentParser

@main
struct Punica: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "punica",
        abstract: "Serve many LoRA fine-tunes of one Llama-family model in one batch.",
        subcommands: [Generate.self, Bench.self])
}
