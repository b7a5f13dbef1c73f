import Injector

/// The --count table: calls, total and mean time, misses per function, and with --hist a log2
/// latency histogram drawn in the terminal (bpftrace's hist() style).
enum CountTable {
    /// Cells of a timing block (timing.c): calls, ns, 65 histogram buckets.
    static let cells = 2 + 65

    struct Row {
        let function: FunctionSymbol
        let calls: UInt64
        let nsecs: UInt64
        let misses: UInt64
        let timed: Bool
        /// Bucket 0: 0 ns; bucket k: [2^(k-1), 2^k) ns.
        let histogram: [UInt64]

        var label: String { function.label }
        /// Calls whose time was taken (a call in flight across a live change may have none).
        var timedCalls: UInt64 { histogram.reduce(0, +) }
        var meanNanos: UInt64 { timedCalls == 0 ? 0 : nsecs / timedCalls }
    }

    static func text(_ rows: [Row], histogram: Bool) -> [String] {
        var lines = [pad("FUNCTION", 40) + lpad("CALLS", 12) + lpad("TOTAL", 12) + lpad("MEAN", 12) + lpad("MISSES", 9)]
        for r in rows.sorted(by: { $0.calls > $1.calls }) {
            lines.append(pad(r.label, 40) + lpad("\(r.calls)", 12) + lpad(r.timed ? duration(r.nsecs) : "-", 12)
                         + lpad(r.timed ? duration(r.meanNanos) : "-", 12) + lpad("\(r.misses)", 9))
        }
        if histogram {
            for r in rows.sorted(by: { $0.calls > $1.calls }) where r.timed && r.calls > 0 {
                lines.append("")
                lines.append("\(r.label) (ns)")
                lines += bars(r.histogram)
            }
        }
        return lines
    }

    /// One line per bucket from the first to the last non-empty one.
    static func bars(_ buckets: [UInt64], width: Int = 40) -> [String] {
        guard let first = buckets.firstIndex(where: { $0 > 0 }), let last = buckets.lastIndex(where: { $0 > 0 }) else { return [] }
        let top = buckets.max() ?? 1
        return (first...last).map { k in
            let (lo, hi) = bounds(k)
            let n = Int((Double(buckets[k]) / Double(top) * Double(width)).rounded(.up))
            let range = "[\(size(lo)), \(size(hi)))"
            return pad(range, 18) + lpad("\(buckets[k])", 10) + " |" + String(repeating: "@", count: n)
                + String(repeating: " ", count: width - n) + "|"
        }
    }

    /// Bucket k holds durations in [lo, hi) nanoseconds.
    static func bounds(_ k: Int) -> (UInt64, UInt64) {
        k == 0 ? (0, 1) : (UInt64(1) << UInt64(k - 1), k >= 64 ? UInt64.max : UInt64(1) << UInt64(k))
    }

    static func size(_ v: UInt64) -> String {
        if v >= 1 << 30 && v % (1 << 30) == 0 { return "\(v >> 30)G" }
        if v >= 1 << 20 && v % (1 << 20) == 0 { return "\(v >> 20)M" }
        if v >= 1 << 10 && v % (1 << 10) == 0 { return "\(v >> 10)K" }
        return "\(v)"
    }

    static func duration(_ ns: UInt64) -> String {
        switch ns {
        case ..<10_000: return "\(ns) ns"
        case ..<10_000_000: return fixed(Double(ns) / 1e3, 1) + " µs"
        case ..<10_000_000_000: return fixed(Double(ns) / 1e6, 1) + " ms"
        default: return fixed(Double(ns) / 1e9, 1) + " s"
        }
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    static func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? " " + s : String(repeating: " ", count: n - s.count) + s }
}
