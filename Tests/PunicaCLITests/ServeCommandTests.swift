import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TestSupport

/// Flags are checked before the model loads: each bad value fails at once, naming the flag and its range.
@Suite struct FlagValidationTests {
    static let refused: [(arguments: [String], message: String)] = [
        (["serve", "--port", "70001"], "--port must be in 1...65535. Given: 70001"),
        (["serve", "--port", "0"], "--port must be in 1...65535. Given: 0"),
        (["serve", "--kv-cache-tokens", "0"], "--kv-cache-tokens must be at least one KV page (16 tokens). Given: 0"),
        (["serve", "--max-running-requests", "0"], "--max-running-requests must be > 0. Given: 0"),
        (["serve", "--max-waiting-requests=-1"], "--max-waiting-requests must be >= 0. Given: -1"),
        (["serve", "--max-body-bytes", "0"], "--max-body-bytes must be > 0. Given: 0"),
        (["serve", "--max-tokens-limit", "0"], "--max-tokens-limit must be > 0. Given: 0"),
        (["serve", "--header-timeout", "0"], "--header-timeout must be > 0 and <= 86400 seconds. Given: 0.0"),
        (["serve", "--body-timeout=-1"], "--body-timeout must be > 0 and <= 86400 seconds. Given: -1.0"),
        (["serve", "--idle-timeout", "nan"], "--idle-timeout must be > 0 and <= 86400 seconds. Given: nan"),
        (["serve", "--send-timeout", "1e9"], "--send-timeout must be > 0 and <= 86400 seconds"),
        (["serve", "--shutdown-timeout", "0"], "--shutdown-timeout must be > 0 and <= 86400 seconds"),
        (["serve", "--send-buffer-bytes", "10"], "--send-buffer-bytes must be >= 1024. Given: 10"),
        (["serve", "--adapter-root", "/no/such/root"], "--adapter-root /no/such/root: no such directory"),
        (["serve", "--lora-filesystem-resolver"], "--lora-filesystem-resolver: needs an --adapter-root to load adapters from"),
        (["serve", "--device", "tpu"], "--device tpu: expected cpu or cuda"),
        (["serve", "--adapter", "x=/no/such/adapter"], "--adapter x=/no/such/adapter: no adapter_config.json there"),
        (["generate", "--prompt", "x", "--max-tokens", "0"], "--max-tokens must be >= 1. Given: 0"),
        (["generate", "--prompt", "x", "--top-p", "2"], "--top-p must be > 0 and <= 1. Given: 2.0"),
        (["generate", "--prompt", "x", "--max-tokens-per-step", "0"], "--max-tokens-per-step must be > 0. Given: 0"),
        (["generate", "--prompt", "x", "--dtype", "int4"], "--dtype int4: expected float16 or bfloat16"),
        (["demo", "--temperature=-1"], "--temperature must be >= 0. Given: -1.0"),
    ]

    @Test(arguments: refused) func badFlagIsRefusedBeforeTheModelLoads(_ arguments: [String], _ message: String) throws {
        // A model directory that does not exist: any error about it would mean the flags were checked too late.
        let run = try punica(arguments + ["--model", "/no/such/model"])
        #expect(run.status != 0)
        #expect(run.error.contains(message), "\(run.error)")
        #expect(!run.error.contains("/no/such/model"), "\(run.error)")
    }

    /// A port in use is reported before the model loads (here: a model that is not there at all).
    @Test func busyPortIsReportedBeforeTheModelLoads() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(bound == 0 && listen(listener, 1) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let run = try punica(["serve", "--port", "\(port)", "--model", "/no/such/model"])
        #expect(run.status != 0)
        #expect(run.error.contains("--host 127.0.0.1 --port \(port): cannot listen there (Address already in use)"), "\(run.error)")
    }
}
