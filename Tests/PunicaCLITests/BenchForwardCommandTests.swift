import Testing

/// `punica bench forward` split by tensor parallelism over CPU ranks (threads), with the all-reduces' share of a
/// decode step, and a size the model's heads refuse.
@Suite struct BenchForwardCommandTests {
    @Test func twoCPURanksRunEveryWorkload() throws {
        let run = try punica(["bench", "forward", "--device", "cpu", "--shape", "llama-15m", "--tensor-parallel-size", "2", "--batch", "2",
                              "--popularity", "distinct", "--prompt-tokens", "4", "--decode-tokens", "2", "--repeats", "1"])
        #expect(run.status == 0, "\(run.error)")
        #expect(run.output.contains("× 2 ranks (tensor parallel") && run.output.contains("| all-reduces of a step |"))
        for workload in ["none", "distinct"] {
            let row = run.output.split(separator: "\n").first { $0.hasPrefix("| 2 | \(workload) | ") }
            #expect(row?.hasSuffix(" % |") == true, "\(run.output)")  // the all-reduces' time and share of the step
        }
    }

    @Test func aSizeThatDoesNotDivideTheHeadsIsRefusedByName() throws {
        let run = try punica(["bench", "forward", "--device", "cpu", "--shape", "llama-15m", "--tensor-parallel-size", "4"])
        #expect(run.status != 0)
        #expect(run.error.contains("num_attention_heads is 6, which a tensor parallel size of 4 cannot split"), "\(run.error)")
    }
}
