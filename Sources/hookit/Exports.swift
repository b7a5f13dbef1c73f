import Glibc

/// The files a session feeds besides stdout: --output (Chrome trace), --prometheus (the count
/// table for node_exporter), --otlp (spans for the OpenTelemetry Collector). All are opened
/// (or first written) before hookit attaches, so a bad path fails with the process untouched.
/// Several processes (`attach PID PID ...`) share one Exports: each file holds every process's
/// calls or counts, told apart by pid.
final class Exports {
    private let chrome: ChromeTraceWriter?
    private let prometheus: PrometheusExport?
    private let otlp: OTLPExport?
    private let output: Output
    private var prometheusFailed = false

    init(options: SessionOptions, output: Output) throws {
        self.output = output
        chrome = try options.chromeTrace.map { try ChromeTraceWriter(path: $0) }
        prometheus = try options.prometheus.map { try PrometheusExport(path: $0) }
        otlp = try options.otlp.map { try OTLPExport(path: $0, service: options.service) }
    }

    var tracing: Bool { chrome != nil || otlp != nil }

    /// A process is hooked: it is named in the files now, while it runs (its comm labels its
    /// series and tracks even after it exits).
    func add(process pid: pid_t) {
        chrome?.add(process: pid)
        prometheus?.add(process: pid)
        otlp?.add(process: pid)
    }

    /// A call of a thread of process `pid`.
    func call(_ c: TracedCall, pid: pid_t) {
        chrome?.add(c, pid: pid)
        otlp?.add(c, pid: pid)
    }

    /// Between drains of the trace ring: spans whose outermost call is known are written.
    func tick() {
        otlp?.flush()
    }

    /// At every --interval and at detach. A failed write is reported once and retried at the
    /// next one (the directory may come back); it never ends the session.
    func counts(_ rows: [CountTable.Row], overrides: [PrometheusExport.Override], dropped: UInt64?, pid: pid_t) {
        guard let prometheus else { return }
        do {
            try prometheus.write(pid: pid, rows: rows, overrides: overrides, dropped: dropped)
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
