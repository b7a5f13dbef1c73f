import Injector

// hookit's aggregation programs (keyed_count.c): counts per key and histograms of values. Their
// layouts are those of keyed_count.c; nothing outside RemoteTramp knows them.

/// --count --by KEY: calls per key in one open-addressing table shared by every thread (atomic
/// adds), read in place.
public struct KeyedCount {
    /// What a call is counted under.
    public enum Key: Equatable, Hashable, Sendable {
        case argument(Int)
        case returnValue
        case threadID
        /// The caller's return address (hookit names its function).
        case caller
        // `--by stack` is to come: a stack's id as the key (keyed_count.c reserves KEY_STACK = 9).

        /// enum key of keyed_count.c.
        var code: UInt64 {
            switch self {
            case .argument(let i): UInt64(i)
            case .returnValue: 6
            case .threadID: 7
            case .caller: 8
            }
        }

        /// Known only when the call returns.
        var atExit: Bool { self == .returnValue }
    }

    /// Slots of a table: the distinct keys it can hold (the rest are counted as `overflow`).
    public static let defaultSlots = 4096
    static let header = 16

    public let key: Key
    let table: UInt64
    let slots: Int
    public let link: Link

    /// Links the counting program at `function`: at its entry, or at its exit for `ret` or a
    /// filter decided there (the arguments and the return address are still in the ctx then).
    public static func link(_ function: FunctionSymbol, key: Key, _ change: HookTransaction, filter: CallFilter? = nil,
                            slots: Int = defaultSlots) throws -> KeyedCount {
        precondition(slots > 0 && slots & (slots - 1) == 0, "a power of two")
        try change.table.configureRuntime()
        let table = try change.table.allocateProgramData(cells: header + 2 * slots)
        change.table.writeProgramData(table, [key.code, UInt64(slots - 1)])
        let l = try change.link(key.atExit || filter?.decidedAtExit == true ? .fexit : .fentry, .runtime(symbol: "hookit_rt_keyed_count"), to: function,
                                cookie: table, filter: filter)
        return KeyedCount(key: key, table: table, slots: slots, link: l)
    }

    public struct Reading: Sendable {
        /// Calls per key (a key that came in twice through a race is summed).
        public let counts: [UInt64: UInt64]
        /// Calls whose key found no free slot.
        public let overflow: UInt64
    }

    /// The table as it is now (CPU 0's cells: every thread writes those).
    public func read(_ table: TrampolineTable) -> Reading {
        let c = table.readProgramData(self.table, cells: Self.header + 2 * slots, cpu0Only: true)
        var counts: [UInt64: UInt64] = [:]
        if c[8] > 0 { counts[0] = c[8] }
        for i in 0..<slots where c[Self.header + 2 * i] != 0 {
            counts[c[Self.header + 2 * i], default: 0] += c[Self.header + 2 * i + 1]
        }
        return Reading(counts: counts, overflow: c[9])
    }
}

/// --hist argN: a log2 histogram of an argument's value, in per-CPU cells.
public struct ValueHistogram {
    public let argument: Int
    let block: UInt64
    public let link: Link
    static let buckets = 65, first = 16

    public static func link(_ function: FunctionSymbol, argument: Int, _ change: HookTransaction,
                            filter: CallFilter? = nil) throws -> ValueHistogram {
        try change.table.configureRuntime()
        let block = try change.table.allocateProgramData(cells: first + buckets)
        change.table.writeProgramData(block, [UInt64(argument)])
        // At the exit when the filter is decided there: only the calls it passes are counted.
        let l = try change.link(filter?.decidedAtExit == true ? .fexit : .fentry, .runtime(symbol: "hookit_rt_value_hist"), to: function,
                                cookie: block, filter: filter)
        return ValueHistogram(argument: argument, block: block, link: l)
    }

    /// Calls per bucket: bucket 0 the value 0, bucket k [2^(k-1), 2^k).
    public func read(_ table: TrampolineTable) -> [UInt64] {
        Array(table.readProgramData(block, cells: Self.first + Self.buckets)[Self.first...])
    }
}
