/// How many KV-cache tokens fit on a device, as vLLM sizes it: the engine may use `utilization` of the device's
/// memory in all; what weights and other tenants already hold, and what steps and loaded adapters will need
/// (`reservedBytes`), come off that budget, and the KV cache takes the rest in whole pages. Pure arithmetic.
public struct KVCacheSizing: Sendable, Equatable {
    public let tokens: Int
    public let bytesPerToken: Int
    public let deviceTotalBytes: Int
    /// Device memory in use when the cache was sized (weights, the runtime, other processes).
    public let usedBytes: Int
    public let reservedBytes: Int
    public let utilization: Double

    /// - Parameters: freeBytes/totalBytes as the device reports them after the weights are loaded; bytesPerToken: the
    ///   key and value rows of every layer for one token.
    ///   maxTokens: the most the cache could ever hold in use (every running request at the longest context): a budget
    ///   beyond it is left free.
    public init(freeBytes: Int, totalBytes: Int, utilization: Double, reservedBytes: Int, bytesPerToken: Int,
                pageSize: Int, maxTokens: Int = .max) throws(KVCacheSizingError) {
        guard utilization > 0 && utilization <= 1 else { throw .utilization(utilization) }
        let budget = Int(Double(totalBytes) * utilization) - (totalBytes - freeBytes) - reservedBytes
        let pages = budget > 0 ? budget / (bytesPerToken * pageSize) : 0
        guard pages >= 1 else {
            throw .tooSmall(totalBytes: totalBytes, usedBytes: totalBytes - freeBytes, reservedBytes: reservedBytes,
                            utilization: utilization, pageBytes: bytesPerToken * pageSize)
        }
        tokens = min(pages, maxTokens / pageSize + (maxTokens % pageSize == 0 ? 0 : 1)) * pageSize
        self.bytesPerToken = bytesPerToken
        deviceTotalBytes = totalBytes
        usedBytes = totalBytes - freeBytes
        self.reservedBytes = reservedBytes
        self.utilization = utilization
    }

    /// What start-up prints.
    public var summary: String {
        "KV cache: \(tokens) tokens = \(gib(tokens * bytesPerToken)) (\(utilization) of \(gib(deviceTotalBytes)); " +
            "\(gib(usedBytes)) already in use, \(gib(reservedBytes)) reserved for steps and adapters)"
    }
}

public enum KVCacheSizingError: Error, CustomStringConvertible, Equatable {
    case utilization(Double)
    case tooSmall(totalBytes: Int, usedBytes: Int, reservedBytes: Int, utilization: Double, pageBytes: Int)

    public var description: String {
        switch self {
        case let .utilization(value):
            "--gpu-memory-utilization must be in (0, 1]. Given: \(value)"
        case let .tooSmall(total, used, reserved, utilization, pageBytes):
            "not enough device memory for a KV cache: \(utilization) of \(gib(total)) leaves nothing after \(gib(used)) " +
                "in use and \(gib(reserved)) reserved for steps and adapters (one page needs \(pageBytes) bytes); " +
                "raise --gpu-memory-utilization or give --kv-cache-tokens"
        }
    }
}

func gib(_ bytes: Int) -> String {
    let value = Double(bytes) / Double(1 << 30)
    return "\(Double((value * 100).rounded()) / 100) GiB"
}
