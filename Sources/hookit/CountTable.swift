import Injector

/// The --count table: calls, total and mean time, misses per function, and with --hist a log2
/// latency histogram drawn in the terminal (bpftrace's hist() style).
enum CountTable {
    struct Row {
        let function: FunctionSymbol
        let calls: UInt64
        let nsecs: UInt64
        let misses: UInt64
        let timed: Bool
        /// Bucket 0: 0 ns; bucket k: [2^(k-1), 2^k) ns.
        let histogram: [UInt64]
        /// --hist argN: calls per log2 bucket of argument N's value (bucket 0: the value 0).
        var valueHistogram: [UInt64]? = nil
        var valueArgument: Int? = nil

        var label: String { function.label }
        /// Calls whose time was taken (a call in flight across a live change may have none).
        var timedCalls: UInt64 { histogram.reduce(0, +) }
        var meanNanos: UInt64 { timedCalls == 0 ? 0 : nsecs / timedCalls }
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

}

/// Left-aligned in `n` columns (at least one space after).
func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
/// Right-aligned in `n` columns (at least one space before).
func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? " " + s : String(repeating: " ", count: n - s.count) + s }
