import CPtrace
import Glibc
import Injector

/// One copy of a user stack, as stack.c wrote it: the bytes above the hooked function's entry
/// sp, taken at a traced call (`sequence` is its trace event's) or by a --by stack sample.
public struct StackSample: Sendable {
    public var tid: UInt32
    /// The trace event's per-thread number; 0 for a sample of --count --by stack.
    public var sequence: UInt64
    /// The function's index (the low half of the link's cookie).
    public var function: Int
    /// The hooked function's entry: the innermost frame's pc.
    public var ip: UInt64
    /// Where `bytes` were copied from: the entry sp - 8.
    public var base: UInt64
    public var bytes: [UInt8]

    /// The sp at the function's entry ([sp] is the return address).
    public var entrySP: UInt64 { base + 8 }
    /// The caller's rbp: the call-original and resume images both open with `push rbp` at the
    /// entry (ImageBuilder's frame), so the copy's first word is the rbp the function was called
    /// with.
    public var entryRBP: UInt64? {
        bytes.count >= 8 ? bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } : nil
    }
}

/// The stack rings: a memfd the tracee's threads write copies of their stacks into (stack.c,
/// lock-free, per CPU when the process has rseq) and hookit reads, as the trace rings
/// (TraceRing) do, with slots of 4 KiB:
///
///     ring r at r * stride:
///     0      header: magic, capacity, slot size, rings, stride (ring 0's hold for all); head at
///            64; dropped at 128
///     4096   capacity slots of 4096 bytes: turn, tid, flags, seq, cookie, ip, base, len, pad,
///            then 4032 bytes of stack from `base` up
///
/// A record is published before the trace event it belongs to, so an event read from the trace
/// ring finds its stack in a drain of this ring made after it.
public final class StackRing {
    static let slotSize = 4096
    static let recordHeader = 64
    let geometry: RingGeometry
    public var capacity: Int { geometry.capacity }
    public var rings: Int { geometry.rings }
    let memory: SharedMemory
    private var tails: [UInt64]
    private let ringSymbol: UInt64

    /// Maps the rings (one per CPU with cells in `table`, or one without rseq), `totalSlots`
    /// records between them (at least 256 each, powers of two), and points the runtime at them.
    public init(table: TrampolineTable, totalSlots: Int = 4096) throws {
        geometry = RingGeometry(table: table, totalSlots: totalSlots, minimum: 256, slotSize: Self.slotSize)
        tails = Array(repeating: 0, count: geometry.rings)
        ringSymbol = try table.runtimeSymbol("hookit_rt_stack_ring")
        memory = try SharedMemory(tracee: table.tracee, length: geometry.bytes, name: "hookit-stack")
        // Every page written once here, so the process's first lap over the ring takes only minor
        // faults (a 4 KiB record per call would otherwise allocate a page per call).
        memset(memory.local, 0, geometry.bytes)
        geometry.writeHeader(memory.local, magic: 0x3130_4B43_4154_534B)      // "KSTACK01"
        try table.tracee.memory.write([UInt8].le(memory.remote), at: ringSymbol)
    }

    private func header(_ r: Int) -> UnsafeMutablePointer<UInt64> { geometry.header(memory.local, r) }

    /// Records writers gave up because a ring was full.
    public var dropped: UInt64 { (0..<rings).reduce(0) { $0 &+ atomicLoad(header($1) + 16) } }

    private struct Key: Hashable { let tid: UInt32, sequence: UInt64 }
    /// Stacks of traced calls read before their events, with the pass that read them.
    private var waiting: [Key: (sample: StackSample, pass: Int)] = [:]
    /// Samples of --count --by stack read and not taken yet.
    private var samples: [StackSample] = []
    private var pass = 0

    /// The stack of a traced call, if one was recorded for it (the stack ring may have been full).
    public func stack(of event: TraceEvent) -> StackSample? {
        let key = Key(tid: event.tid, sequence: event.sequence)
        if let w = waiting.removeValue(forKey: key) { return w.sample }
        collect()
        return waiting.removeValue(forKey: key)?.sample
    }

    /// The --by stack samples recorded so far.
    public func takeSamples() -> [StackSample] {
        collect()
        defer { samples = [] }
        return samples
    }

    private func collect() {
        pass += 1
        for s in drain() {
            if s.sequence == 0 { samples.append(s) } else { waiting[Key(tid: s.tid, sequence: s.sequence)] = (s, pass) }
        }
        // A stack whose call is never reported (its events left unread) would wait for ever: past
        // twice what the rings hold, the oldest half goes.
        if waiting.count > 2 * capacity * rings {
            let cut = waiting.values.map(\.pass).sorted()[waiting.count / 2]
            waiting = waiting.filter { $0.value.pass > cut }
        }
    }

    /// The complete records available now, ring by ring. A slot reserved and still being
    /// written ends its ring's batch.
    func drain(max: Int = .max) -> [StackSample] {
        geometry.consume(memory.local, tails: &tails, max: max, publishingTail: false, Self.decode)
    }

    static func decode(_ s: UnsafeMutablePointer<UInt64>) -> StackSample {
        let raw = UnsafeMutableRawPointer(s)
        let len = Int(min(s[6], UInt64(slotSize - recordHeader)))     // written by the process: any value
        let bytes = Array(UnsafeRawBufferPointer(start: raw + recordHeader, count: len))
        return StackSample(tid: raw.load(fromByteOffset: 8, as: UInt32.self), sequence: s[2],
                           function: TraceProgram.unpack(cookie: s[3]).index, ip: s[4], base: s[5], bytes: bytes)
    }

    /// The runtime stops writing; with `unmap`, the tracee's mapping goes too (see TraceRing.close).
    public func close(tracee: Tracee, unmap: Bool) {
        try? tracee.memory.write([UInt8].le(UInt64(0)), at: ringSymbol)
        if unmap { try? memory.unmapRemote(tracee: tracee) }
    }
}

/// --count PATTERN --by stack (stack.c): an fentry program that copies the stack of every call
/// into the stack rings, with the function's index as its cookie.
public enum StackSampleProgram {
    @discardableResult
    public static func link(_ function: FunctionSymbol, index: Int, _ change: HookTransaction) throws -> Link {
        try change.link(.fentry, .runtime(symbol: "hookit_rt_stack_sample"), to: function, cookie: UInt64(UInt32(index)))
    }
}
