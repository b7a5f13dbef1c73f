import Injector

/// The --count --by table of one function: calls per key, most first (bpftrace's @[key] =
/// count() map printed at the end).
struct KeyTable {
    struct Row { let key: TracedValue, count: UInt64 }

    let function: FunctionSymbol
    let by: String
    /// The rows shown (--top N: the N with the most calls).
    let rows: [Row]
    /// Calls of the keys --top left out.
    var others: UInt64 = 0
    /// Calls whose key found no free slot in the process's table (too many distinct keys).
    let overflow: UInt64

    init(function: FunctionSymbol, by: String, rows: (shown: [Row], others: UInt64), overflow: UInt64) {
        self.function = function
        self.by = by
        self.rows = rows.shown
        self.others = rows.others
        self.overflow = overflow
    }

    /// Most calls first (ties by key text, so a table reads the same every time), cut to `top`.
    static func ranked(_ rows: [Row], top: Int?) -> (shown: [Row], others: UInt64) {
        let sorted = rows.sorted { $0.count != $1.count ? $0.count > $1.count : $0.key.text < $1.key.text }
        guard let top, sorted.count > top else { return (sorted, 0) }
        return (Array(sorted.prefix(top)), sorted.dropFirst(top).reduce(0) { $0 + $1.count })
    }
}
