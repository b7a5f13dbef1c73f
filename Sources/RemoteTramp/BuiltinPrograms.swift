import Injector

// hookit's own programs (libhookit_rt.so): what each links at a function, the data it reads in
// shared memory, and a typed reader of its results. The layouts below are those of timing.c,
// override.c and trace.c; nothing outside RemoteTramp knows them.

/// --count with time (timing.c): calls counted at entry (exact across live changes), time and a
/// log2 histogram at exit, in per-CPU cells.
public struct TimedCount {
    /// calls, ns, 65 buckets (bucket k: [2^(k-1), 2^k) ns; bucket 0: 0 ns).
    static let cells = 2 + 65
    let block: UInt64
    /// The entry program's link.
    public let entry: Link

    /// Links the pair of programs at `function`; the block is in place before they go live.
    /// With a filter decided at exit, calls are counted at exit (hookit_rt_time_exit_count).
    public static func link(_ function: FunctionSymbol, _ change: HookTransaction, filter: CallFilter? = nil) throws -> (TimedCount, [Link]) {
        let block = try change.table.allocateProgramData(cells: cells)
        let atExit = filter?.decidedAtExit == true
        let enter = try change.link(.fentry, .runtime(symbol: atExit ? "hookit_rt_time_stamp" : "hookit_rt_time_enter"), to: function,
                                    cookie: block, filter: filter)
        let exit = try change.link(.fexit, .runtime(symbol: atExit ? "hookit_rt_time_exit_count" : "hookit_rt_time_exit"), to: function,
                                   cookie: block, filter: filter)
        return (TimedCount(block: block, entry: enter), [enter, exit])
    }

    public struct Reading: Sendable {
        public let calls: UInt64
        public let nsecs: UInt64
        /// Calls per log2 bucket of their duration.
        public let histogram: [UInt64]
    }

    public func read(_ table: TrampolineTable) -> Reading {
        let c = table.readProgramData(block, cells: Self.cells)
        return Reading(calls: c[0], nsecs: c[1], histogram: Array(c[2...]))
    }
}

/// --override (override.c): a fmod_ret program that skips the function and returns a value,
/// leaving an errno, on every call, every Nth or with a probability.
public struct Override: Sendable {
    public struct Settings: Equatable, Sendable {
        public var value: UInt64
        public var errno: Int32 = 0
        /// Inject on every Nth call (0 or 1: every call).
        public var every: UInt64 = 0
        /// Probability in 1/2^32 units (2^32: always).
        public var threshold: UInt64 = 1 << 32
        public init(value: UInt64) { self.value = value }

        /// struct override: value, err, every, threshold, 12 cells apart, calls, injected.
        var cells: [UInt64] { [value, UInt64(bitPattern: Int64(errno)), every, threshold] + [UInt64](repeating: 0, count: 14) }
        static let callsCell = 16, injectedCell = 17
    }

    public let settings: Settings
    let config: UInt64

    /// Writes the settings and links the program at `function`.
    public static func link(_ function: FunctionSymbol, _ settings: Settings, _ change: HookTransaction,
                            filter: CallFilter? = nil) throws -> (Override, Link) {
        try change.table.configureRuntime()
        let config = try change.table.allocateProgramData(cells: settings.cells.count)
        change.table.writeProgramData(config, settings.cells)
        let l = try change.link(.fmodRet, .runtime(symbol: "hookit_rt_override"), to: function, cookie: config, filter: filter)
        return (Override(settings: settings, config: config), l)
    }

    public struct Reading: Sendable {
        public let calls: UInt64
        public let injected: UInt64
    }

    public func read(_ table: TrampolineTable) -> Reading {
        let c = table.readProgramData(config, cells: settings.cells.count)
        return Reading(calls: c[Settings.callsCell], injected: c[Settings.injectedCell])
    }
}

/// --trace (trace.c): the entry time at entry, one event per call at exit into the trace rings
/// (TraceRing). The link's cookie carries the function's index and which values are strings.
public enum TraceProgram {
    /// Which of a call's values trace.c copies as C strings (the first two of them).
    public struct Strings: Equatable, Sendable {
        public var arguments: [Int]
        public var returnValue: Bool
        public init(arguments: [Int] = [], returnValue: Bool = false) {
            self.arguments = arguments
            self.returnValue = returnValue
        }

        /// Bits 0-5: arguments; bit 6: the return value.
        var mask: UInt64 {
            arguments.filter { (0..<6).contains($0) }.reduce(returnValue ? UInt64(1) << 6 : 0) { $0 | 1 << UInt64($1) }
        }
    }

    /// Links the pair at `function`; its events carry `index` as TraceEvent.function. `stack`:
    /// each event's stack is copied into the stack rings too (StackRing), under its (tid, seq).
    /// With a filter, only the calls it passes are recorded: one decided at entry runs neither
    /// program for the others (no entry event, no end event); one decided at exit (on `ret` or
    /// `ns`) links a pair that records nothing at the entry but its time, and writes the entry
    /// and end events together at the exit of a call that passed (see ImageBuilder.FilterGuards).
    @discardableResult
    public static func link(_ function: FunctionSymbol, index: Int, strings: Strings, stack: Bool = false,
                            _ change: HookTransaction, filter: CallFilter? = nil) throws -> [Link] {
        let cookie = UInt64(UInt32(index)) | strings.mask << 32 | (stack ? stackBit : 0)
        let atExit = filter?.decidedAtExit == true
        let enter = try change.link(.fentry, .runtime(symbol: atExit ? "hookit_rt_trace_stamp" : "hookit_rt_trace_enter"), to: function,
                                    cookie: cookie, filter: filter)
        let exit = try change.link(.fexit, .runtime(symbol: atExit ? "hookit_rt_trace_exit_both" : "hookit_rt_trace_exit"), to: function,
                                   cookie: cookie, filter: filter)
        return [enter, exit]
    }

    /// trace.c's HOOKIT_RT_TRACE_STACK: the entry event's stack is copied too.
    static let stackBit: UInt64 = 1 << 39

    /// An event's function index and string mask, from its cookie.
    static func unpack(cookie: UInt64) -> (index: Int, strings: UInt64) { (Int(cookie & 0xFFFF_FFFF), (cookie >> 32) & 0x7f) }
}

/// Marks (marks.c): a runtime program at the entry of each function that ends calls without
/// their returning, so that the trace and the timed counts end those calls where it happened.
public enum Marks {
    /// The functions (`MODULE:NAME`), and each one's mark (its cookie, see marks.c): the jumps
    /// of setjmp's family, a catch, pthread_exit, exit.
    public static let functions: [(name: String, mark: UInt64)] = [
        ("libc:longjmp", 1), ("libc:_longjmp", 1), ("libc:siglongjmp", 1), ("libc:__longjmp_chk", 1),
        ("libstdc++:__cxa_begin_catch", 2), ("libc:pthread_exit", 3), ("libc:exit", 4), ("libc:_exit", 4),
        ("libc:quick_exit", 4),
    ]

    /// Links the marks at those of `functions` (found by name); one link per address, as
    /// aliases share one.
    public static func link(_ functions: [(FunctionSymbol, mark: UInt64)], _ change: HookTransaction) throws -> [Link] {
        var seen = Set<UInt64>()
        return try functions.filter { seen.insert($0.0.address).inserted }.map {
            try change.link(.fentry, .runtime(symbol: "hookit_rt_mark"), to: $0.0, cookie: $0.mark)
        }
    }
}
