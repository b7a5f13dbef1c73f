import Glibc
import Prometheus

/// --prometheus FILE.prom: the --count table in Prometheus' text exposition format, the file
/// node_exporter's textfile collector serves. Rewritten whole (AtomicFile) at every --interval
/// and at detach; the last version stays after hookit exits, so the final counts can still be
/// scraped. Several processes (`attach PID PID ...`) share the file: each has its own series
/// (labels `pid` and `process`), and each one's counts replace its own section.
///
/// Counters go through swift-prometheus: a fresh registry per write, each counter incremented
/// once by the absolute value hookit read (the tracee holds the running totals; hookit never
/// sees single calls). The histogram cannot: swift-prometheus' Histogram only takes single
/// observations (`record(_:)`, one lock and one pass over the buckets per call) and derives its
/// sum from them, while hookit has log2 bucket counts and an exact sum from the tracee's timing
/// cells. Replaying millions of observations per interval would be slow and make `_sum` a sum
/// of bucket bounds, so the histogram family is written here, in the same format.
final class PrometheusExport {
    let path: String
    /// Per process, in the order they were hooked: its comm (read once, so a series keeps its
    /// labels after the process exits) and its latest counts.
    private var sections: [Section] = []
    private struct Section {
        let pid: pid_t
        let process: String
        var rows: [CountTable.Row] = []
        var overrides: [Override] = []
        var dropped: UInt64?
    }

    /// Buckets written: le = 2^k ns for k in 0...36 (1 ns to 68.7 s), then +Inf. Fixed, so a
    /// series keeps the same buckets for the life of the file.
    static let bucketExponents = 0...36

    struct Override { let function: String, injected: UInt64 }

    init(path: String) throws(AtomicFileError) {
        self.path = path
        try AtomicFile.write(render(), to: path)   // fails before attaching
    }

    /// A process whose counts will come; its name is read now, while it runs.
    func add(process pid: pid_t) {
        if !sections.contains(where: { $0.pid == pid }) { sections.append(Section(pid: pid, process: processName(pid))) }
    }

    /// The counts of process `pid` as they are now; the file is rewritten with every process's.
    func write(pid: pid_t, rows: [CountTable.Row], overrides: [Override], dropped: UInt64?) throws(AtomicFileError) {
        add(process: pid)
        let i = sections.firstIndex { $0.pid == pid }!
        sections[i].rows = rows
        sections[i].overrides = overrides
        sections[i].dropped = dropped
        try AtomicFile.write(render(), to: path)
    }

    /// The counters: namespace hookit, unit total (the descriptor joins them: hookit_calls_total).
    static let calls = MetricNameDescriptor(namespace: "hookit", metricName: "calls", unitName: "total",
                                            helpText: "Calls of a function counted by hookit --count")
    static let misses = MetricNameDescriptor(namespace: "hookit", metricName: "misses", unitName: "total",
                                             helpText: "Calls hookit did not count: a nested run inside its own programs (recursion guard)")
    static let overrides = MetricNameDescriptor(namespace: "hookit", metricName: "overrides", unitName: "total",
                                                helpText: "Calls hookit --override skipped, returning its value instead")
    static let dropped = MetricNameDescriptor(namespace: "hookit", subsystem: "trace", metricName: "dropped", unitName: "total",
                                              helpText: "Traced calls lost because the trace ring was full")

    private func render() -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        for p in sections {
            let target = [("pid", "\(p.pid)"), ("process", p.process)]
            for r in p.rows {
                let labels = target + [("function", r.label)]
                registry.makeCounter(descriptor: Self.calls, labels: labels).increment(by: Int64(clamping: r.calls))
                registry.makeCounter(descriptor: Self.misses, labels: labels).increment(by: Int64(clamping: r.misses))
            }
            for o in p.overrides {
                registry.makeCounter(descriptor: Self.overrides, labels: target + [("function", o.function)])
                    .increment(by: Int64(clamping: o.injected))
            }
            if let dropped = p.dropped {
                registry.makeCounter(descriptor: Self.dropped, labels: target).increment(by: Int64(clamping: dropped))
            }
        }
        var out = registry.emitToBuffer()
        out += histogram(sections.map { ($0.pid, $0.process, $0.rows.filter(\.timed)) })
        return out
    }

    /// hookit_call_duration_seconds: bucket k of the tracee's histogram holds [2^(k-1), 2^k) ns,
    /// all below 2^k ns, so the cumulative count for le = 2^k ns is the sum of buckets 0...k.
    private func histogram(_ processes: [(pid: pid_t, process: String, rows: [CountTable.Row])]) -> [UInt8] {
        if processes.allSatisfy(\.rows.isEmpty) { return [] }
        let name = "hookit_call_duration_seconds"
        var s = "# HELP \(name) Time spent in a function, from entry to return (hookit --count)\n# TYPE \(name) histogram\n"
        for (pid, process, rows) in processes {
            for r in rows {
                let labels = "pid=\"\(pid)\",process=\"\(Self.escape(process))\",function=\"\(Self.escape(r.label))\""
                var cumulative: UInt64 = 0
                for k in Self.bucketExponents {
                    cumulative += k < r.histogram.count ? r.histogram[k] : 0
                    s += "\(name)_bucket{\(labels),le=\"\(Double(UInt64(1) << UInt64(k)) / 1e9)\"} \(cumulative)\n"
                }
                s += "\(name)_bucket{\(labels),le=\"+Inf\"} \(r.timedCalls)\n"
                s += "\(name)_sum{\(labels)} \(Double(r.nsecs) / 1e9)\n"
                s += "\(name)_count{\(labels)} \(r.timedCalls)\n"
            }
        }
        return Array(s.utf8)
    }

    /// A label value as the text format requires: backslash, double quote and line feed escaped.
    static func escape(_ v: String) -> String {
        v.escaping(["\\": "\\\\", "\"": "\\\"", "\n": "\\n"])
    }
}
