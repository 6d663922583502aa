@testable import PunicaServer
import Testing

@Suite struct PrometheusTests {
    @Test func histogramBucketsAreCumulativeWithInfSumAndCount() {
        var histogram = Histogram(bounds: [0.1, 1])
        for value in [0.05, 0.1, 0.5, 3] { histogram.observe(value) }
        var text = PrometheusText()
        text.histogram("latency_seconds", "How long.", histogram)
        #expect(text.text == """
            # HELP latency_seconds How long.
            # TYPE latency_seconds histogram
            latency_seconds_bucket{le="0.1"} 2
            latency_seconds_bucket{le="1"} 3
            latency_seconds_bucket{le="+Inf"} 4
            latency_seconds_sum 3.65
            latency_seconds_count 4

            """)
    }

    @Test func labelValuesAreEscaped() {
        var text = PrometheusText()
        text.counter("requests_total", "Requests.", [([("model", "a\"b\\c\nd")], 3)])
        #expect(text.text.hasSuffix(#"requests_total{model="a\"b\\c\nd"} 3"# + "\n"))
    }
}
