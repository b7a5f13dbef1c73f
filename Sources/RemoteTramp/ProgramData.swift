import Glibc
import Injector

/// Data of hookit's runtime programs (libhookit_rt.so), handed to each through its link's
/// cookie: per-CPU blocks the tracee's threads write and hookit reads in place.
extension TrampolineTable {
    /// A link's runs (built-in count: calls), time and misses, summed over the CPUs.

    public func stats(_ link: Link) throws -> LinkStats {
        if let c = link.counter {
            return LinkStats(calls: UInt64(max(0, cells.read(c) ?? 0)), nsecs: 0, misses: 0)
        }
        // struct hookit_rt_stats cells, per CPU; time is kept in TSC ticks.
        let first = index(of: link.statsAddress!)
        func sum(_ i: Int) -> UInt64 { UInt64(max(0, cells.read(first + i) ?? 0)) }
        let ticks = sum(1)
        return LinkStats(calls: sum(0), nsecs: ticks == 0 ? 0 : UInt64(Double(ticks) * 1e9 / Self.tscHz), misses: sum(2))
    }

    /// `cells` zeroed 8-byte cells per CPU; returns CPU 0's address in the tracee (CPU c's is
    /// HOOKIT_RT_CPU_STRIDE bytes further). Never freed before detach.
    public func allocateProgramData(cells: Int) throws -> UInt64 {
        self.cells.cell(try self.cells.allocateBlock(cells, tracee: tracee), cpu: 0)
    }

    /// Sets CPU 0's cells of a block (settings a program reads; written before it is linked).
    public func writeProgramData(_ address: UInt64, _ values: [UInt64]) {
        let first = index(of: address)
        for (i, v) in values.enumerated() { self.cells.localCell(first + i, cpu: 0).pointee = v }
    }

    /// A block's cells, summed over the CPUs; `cpu0Only`: CPU 0's cells alone (data every thread
    /// updates there with atomics, whose other CPUs' copies are never touched).
    public func readProgramData(_ address: UInt64, cells: Int, cpu0Only: Bool = false) -> [UInt64] {
        let first = index(of: address)
        if cpu0Only { return (0..<cells).map { atomicLoad(self.cells.localCell(first + $0, cpu: 0)) } }
        return (0..<cells).map { UInt64(bitPattern: self.cells.read(first + $0) ?? 0) }
    }

    /// The cell index of a block's (or a link's statistics') CPU 0 address.
    func index(of address: UInt64) -> Int { Int((address - cells.cell(0, cpu: 0)) / 8) }

    /// Tells the runtime what it needs for time and thread ids: nanoseconds per TSC tick, and
    /// where glibc keeps each thread's tid (so a trace event costs no gettid system call).
    /// Needs the world stopped.
    public func configureRuntime() throws {
        let q32 = UInt64((1e9 / Self.tscHz) * 4294967296.0)
        try tracee.memory.write([UInt8].le(q32), at: try runtimeSymbol("hookit_rt_ns_per_tick_q32"))
        // A new session: calls timing.c kept open in an earlier one are forgotten.
        try tracee.memory.write([UInt8].le(TimeStampCounter.now() | 1), at: try runtimeSymbol("hookit_rt_time_session"))
        if let offset = try? ThreadIdentity.tidOffset(tracee) {
            try tracee.memory.write([UInt8].le(UInt64(offset)), at: try runtimeSymbol("hookit_rt_tid_offset"))
        }
    }

    /// Converts TSC ticks (the runtime's clock) to nanoseconds.
    public static func nanoseconds(ticks: UInt64) -> UInt64 { UInt64(Double(ticks) * 1e9 / tscHz) }
}

/// Where glibc's struct pthread keeps the thread id, relative to the thread pointer (fs base).
enum ThreadIdentity {
    /// The offset at which the sampled threads' own tids are found (32-bit, 4-aligned, within
    /// the first 2 KiB above their fs base): every thread with the world stopped, one otherwise.
    /// glibc has it at 0x2d0 for years; it is found rather than assumed. nil when no single
    /// answer is found.
    static func tidOffset(_ tracee: Tracee) throws -> Int? {
        var candidates: Set<Int>?
        for (tid, regs) in try tracee.sampleRegisters() {
            let fs = regs.fs_base
            guard fs != 0, let bytes = try? tracee.memory.read(at: fs, count: 2048) else { return nil }
            var here = Set<Int>()
            for off in stride(from: 16, to: 2048, by: 4) {
                let v = UInt32(bytes[off]) | UInt32(bytes[off + 1]) << 8 | UInt32(bytes[off + 2]) << 16 | UInt32(bytes[off + 3]) << 24
                if v == UInt32(tid) { here.insert(off) }
            }
            candidates = candidates.map { $0.intersection(here) } ?? here
        }
        guard let c = candidates, !c.isEmpty else { return nil }
        // A single-threaded process may match by chance elsewhere too: glibc's place wins.
        return c.contains(0x2d0) ? 0x2d0 : (c.count == 1 ? c.first : nil)
    }
}
