import PunicaEngine

/// Prometheus' text exposition format (version 0.0.4): `# HELP` and `# TYPE` lines, then one sample per line.
struct PrometheusText {
    private(set) var text = ""

    mutating func counter(_ name: String, _ help: String, _ samples: [(labels: [(String, String)], value: Int)]) {
        header(name, help, "counter")
        for sample in samples { line(name, sample.labels, String(sample.value)) }
    }

    mutating func gauge(_ name: String, _ help: String, _ samples: [(labels: [(String, String)], value: Double)]) {
        header(name, help, "gauge")
        for sample in samples { line(name, sample.labels, Self.number(sample.value)) }
    }

    mutating func gauge(_ name: String, _ help: String, _ value: Double) {
        gauge(name, help, [([], value)])
    }

    /// Buckets are cumulative: `le="b"` counts every observation <= b, `le="+Inf"` all of them.
    mutating func histogram(_ name: String, _ help: String, _ histogram: Histogram) {
        header(name, help, "histogram")
        var cumulative = 0
        for (bound, count) in zip(histogram.bounds, histogram.counts) {
            cumulative += count
            line(name + "_bucket", [("le", Self.number(bound))], String(cumulative))
        }
        line(name + "_bucket", [("le", "+Inf")], String(histogram.count))
        line(name + "_sum", [], Self.number(histogram.sum))
        line(name + "_count", [], String(histogram.count))
    }

    private mutating func header(_ name: String, _ help: String, _ type: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    private mutating func line(_ name: String, _ labels: [(String, String)], _ value: String) {
        let labelText = labels.isEmpty ? "" : "{" + labels.map { "\($0)=\"\(Self.escaped($1))\"" }.joined(separator: ",") + "}"
        text += "\(name)\(labelText) \(value)\n"
    }

    /// Label values escape backslash, double quote and newline.
    static func escaped(_ value: String) -> String {
        value.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}

/// Observations counted into fixed buckets.
struct Histogram {
    /// Upper bounds, ascending; observations above the last go only to `+Inf`.
    let bounds: [Double]
    /// Observations per bucket (not cumulative).
    private(set) var counts: [Int]
    private(set) var sum = 0.0
    private(set) var count = 0

    init(bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count)
    }

    mutating func observe(_ value: Double) {
        if let bucket = bounds.firstIndex(where: { value <= $0 }) { counts[bucket] += 1 }
        sum += value
        count += 1
    }
}

/// How a generation request ended: its finish reason, or refused before it ran.
enum RequestOutcome: String, CaseIterable {
    case stop, length, cancelled, error, rejected

    init(_ reason: FinishReason) {
        switch reason {
        case .stop: self = .stop
        case .length: self = .length
        case .cancelled: self = .cancelled
        case .error: self = .error
        }
    }
}

/// The server's counters and latency histograms; the engine's gauges are read from `GenerationService.stats()` when
/// scraped.
actor ServerMetrics {
    private var requests: [RequestOutcome: Int] = [:]
    private var promptTokens = 0
    private var generatedTokens = 0
    // Bucket bounds as vLLM's, so dashboards for either read the same.
    private var timeToFirstToken = Histogram(bounds: [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80])
    private var interTokenLatency = Histogram(bounds: [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10])

    func firstToken(after seconds: Double) { timeToFirstToken.observe(seconds) }

    func nextToken(after seconds: Double) { interTokenLatency.observe(seconds) }

    func finished(_ reason: FinishReason, usage: Usage) {
        requests[RequestOutcome(reason), default: 0] += 1
        promptTokens += usage.promptTokens
        generatedTokens += usage.completionTokens
    }

    func rejected() { requests[.rejected, default: 0] += 1 }

    /// The exposition of the server's metrics and the engine's `stats`; `adapters` are all registered ones, listed
    /// even while idle, and `baseModel` names the requests without an adapter.
    func exposition(stats: EngineStats, adapters: [String], baseModel: String, connectionsClosed: [ConnectionCloseReason: Int] = [:]) -> String {
        var text = PrometheusText()
        text.counter("punica_requests_total", "Generation requests by outcome: finish reason (cancelled: the client went away, stopped reading, or the server stopped), or rejected before running.",
                     RequestOutcome.allCases.map { ([("outcome", $0.rawValue)], requests[$0] ?? 0) })
        text.counter("punica_prompt_tokens_total", "Prompt tokens of finished requests.", [([], promptTokens)])
        text.counter("punica_generation_tokens_total", "Tokens generated by finished requests.", [([], generatedTokens)])
        text.counter("punica_http_connections_closed_total", "Connections the server closed itself, by reason (timeouts, a client that stopped reading, malformed requests, the shutdown deadline).",
                     ConnectionCloseReason.allCases.map { ([("reason", $0.rawValue)], connectionsClosed[$0] ?? 0) })
        text.histogram("punica_time_to_first_token_seconds", "From the request's arrival to its first generated token.", timeToFirstToken)
        text.histogram("punica_inter_token_latency_seconds", "Between consecutive generated tokens of a request.", interTokenLatency)
        text.gauge("punica_requests_running", "Requests in the running batch.", Double(stats.running))
        text.gauge("punica_requests_waiting", "Requests queued for the batch.", Double(stats.waiting))
        text.gauge("punica_kv_pages_used", "KV-cache pages held by requests.", Double(stats.kvPagesUsed))
        text.gauge("punica_kv_pages_total", "KV-cache pages in all.", Double(stats.kvPagesTotal))
        text.gauge("punica_generation_tokens_per_second", "Tokens generated per second over the last few seconds.", stats.generatedTokensPerSecond)
        text.gauge("punica_adapter_requests", "Requests running or waiting, by model (the base model or an adapter).",
                   ([baseModel] + adapters).map { name in
                       ([("model", name)], Double(stats.requestsPerAdapter[name == baseModel ? "" : name] ?? 0))
                   })
        return text.text
    }
}
