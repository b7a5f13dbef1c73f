import Glibc

/// The files a session feeds besides stdout: --output (Chrome trace), --prometheus (the count
/// table for node_exporter), --otlp (spans for the OpenTelemetry Collector). All are opened
/// (or first written) before hookit attaches, so a bad path fails with the process untouched.
final class Exports {
    private let chrome: ChromeTraceWriter?
    private let prometheus: PrometheusExport?
    private let otlp: OTLPExport?
    private let output: Output
    private var prometheusFailed = false

    init(options: SessionOptions, pid: pid_t, output: Output) throws {
        self.output = output
        chrome = try options.chromeTrace.map { try ChromeTraceWriter(path: $0, pid: pid) }
        prometheus = try options.prometheus.map { try PrometheusExport(path: $0, pid: pid) }
        otlp = try options.otlp.map { try OTLPExport(path: $0, pid: pid, service: options.service) }
    }

    var tracing: Bool { chrome != nil || otlp != nil }

    func call(_ c: TracedCall) {
        chrome?.add(c)
        otlp?.add(c)
    }

    /// Between drains of the trace ring: spans whose outermost call is known are written.
    func tick() {
        otlp?.flush()
    }

    /// At every --interval and at detach. A failed write is reported once and retried at the
    /// next one (the directory may come back); it never ends the session.
    func counts(_ rows: [CountTable.Row], overrides: [PrometheusExport.Override], dropped: UInt64?) {
        guard let prometheus else { return }
        do {
            try prometheus.write(rows: rows, overrides: overrides, dropped: dropped)
            prometheusFailed = false
        } catch {
            if !prometheusFailed { output.problem("--prometheus: \(error)") }
            prometheusFailed = true
        }
    }

    func close() {
        chrome?.close()
        otlp?.close()
    }
}
