import CPtrace
import Glibc
import Injector

/// One event of the trace ring, as trace.c wrote it: a call's entry, its end, or a mark that
/// ends calls without their returning (CallStacks pairs them into calls).
public struct TraceEvent: Sendable {
    public enum Kind: UInt32, Sendable {
        /// The call began: its arguments and argument strings.
        case entry = 0
        /// It returned: its return value (and that string).
        case end = 1
        /// longjmp or a catch: the calls whose entry stack pointer is below `stackPointer` are gone.
        case unwind = 2
        /// pthread_exit was called.
        case threadExit = 3
        /// exit or _exit was called.
        case exit = 4
    }
    public var kind: Kind
    public var tid: UInt32
    /// The function's index (the low half of the trace link's cookie).
    public var function: Int
    /// When it happened, in TSC ticks.
    public var ticks: UInt64
    /// rsp at the function's entry (both events of one call carry the same).
    public var stackPointer: UInt64
    public var args: [UInt64]
    public var ret: UInt64
    /// Copies of the values marked as strings, in order, at most two (entry: arguments; end:
    /// the return value); nil for a null or unreadable pointer.
    public var strings: [String?]
    /// End events of this thread the ring had no room for, before this one (24 bits, wrapping).
    var lostEnds: UInt64 = 0
    /// The thread's own number for the event: 1, 2, 3... in the order it wrote them.
    var sequence: UInt64 = 0
}

/// The trace rings: a memfd shared by the tracee's threads (writers, the trace programs, any
/// number at once, lock-free) and hookit (the one reader). The layout is trace.c's: one ring per
/// CPU when the process has rseq (a writer reserves in its CPU's ring inside an rseq critical
/// section: no locked instruction, no line shared between CPUs), else one ring taken by CAS.
///
///     ring r at r * stride:
///     0      header: magic, capacity, slot size, rings, stride (ring 0's hold for all); head at
///            64; dropped at 128; dropped ends at 192, the reader's tail at 200; ring 0: at 256
///            the count of stable ranges, then [start, end)
///            pairs (memory strings may be read from directly)
///     4096   capacity slots of 256 bytes: turn, tid, flags (kind in bits 16-18), cookie (with
///            the thread's lost end events in bits 40-63), ts, sp, seq, ret, args[6], str[2][76]
///            (an end event fills the first cache line only)
///
/// Slot turns, counted from the lap L = p & ~mask of position p (so zeroed memory is a ready
/// ring): a writer takes p when the slot holds L and publishes L + 1; the reader consumes p when
/// it holds L + 1 and hands it to the next lap with L + capacity. A full ring makes writers count
/// a drop and return: the tracee never waits for hookit.
///
/// A thread that migrates writes its next event into another ring; ThreadOrder puts each
/// thread's events back in order by the number each carries.
public final class TraceRing {
    static let slotSize = 256
    /// Bytes kept of each string (with its NUL), trace.c's STR_BYTES.
    static let stringBytes = 76
    /// Ranges of never-unmapped memory in ring 0's header, from byte 264 to its end.
    static let maxStableRanges = (RingGeometry.headerSize - 264) / 16
    let geometry: RingGeometry
    /// Slots per ring.
    public var capacity: Int { geometry.capacity }
    public var rings: Int { geometry.rings }
    let memory: SharedMemory
    private var tails: [UInt64]
    private var order = ThreadOrder()
    private var given: UInt64 = 0
    private let ringSymbol: UInt64

    /// Maps the rings, one per CPU with cells in `table` (or one when the tracee has no rseq),
    /// `totalSlots` between them (at least 1024 each, powers of two), and points the runtime at
    /// them. Needs the world stopped and the runtime loadable.
    public init(table: TrampolineTable, totalSlots: Int = 1 << 16) throws {
        geometry = RingGeometry(table: table, totalSlots: totalSlots, minimum: 1024, slotSize: Self.slotSize)
        tails = Array(repeating: 0, count: geometry.rings)
        ringSymbol = try table.runtimeSymbol("hookit_rt_ring")
        memory = try SharedMemory(tracee: table.tracee, length: geometry.bytes, name: "hookit-trace")
        geometry.writeHeader(memory.local, magic: 0x3130_474E_4952_4B48)      // "HKRING01"
        let words = memory.local.assumingMemoryBound(to: UInt64.self)
        // Where strings can be copied with plain loads (permanentRanges): the rest goes through
        // process_vm_readv, which cannot fault but costs a microsecond.
        let stable = table.symbols.permanentRanges().prefix(Self.maxStableRanges)
        words[32] = UInt64(stable.count)
        for (i, r) in stable.enumerated() { words[33 + 2 * i] = r.lowerBound; words[34 + 2 * i] = r.upperBound }
        try table.tracee.memory.write([UInt8].le(memory.remote), at: ringSymbol)
    }

    private func header(_ r: Int) -> UnsafeMutablePointer<UInt64> { geometry.header(memory.local, r) }
    private func slot(_ r: Int, _ p: UInt64) -> UnsafeMutablePointer<UInt64> { geometry.slot(memory.local, r, p) }

    /// Calls given up because a ring was full at their entry.
    public var dropped: UInt64 { (0..<rings).reduce(0) { $0 &+ atomicLoad(header($1) + 16) } }


    /// Positions reserved by writers so far.
    public var reserved: UInt64 { (0..<rings).reduce(0) { $0 &+ atomicLoad(header($1) + 8) } }

    /// The complete events available now, at most about `max`: per thread in the order it wrote
    /// them (ThreadOrder). A reserved slot still being written ends its ring's batch: the
    /// next call continues there. `final`: events still waiting for an earlier one of their
    /// thread go out too (the last drain: what never came is counted as lost).
    public func drain(max: Int = .max, final: Bool = false) -> [TraceEvent] {
        // Writers of entries keep a quarter of the ring free beyond what is read: they see the tail.
        let fresh = geometry.consume(memory.local, tails: &tails, max: max, publishingTail: true, Self.decode)
        order.add(fresh)
        let out = order.release(all: final)
        given += UInt64(out.count)
        return out
    }

    /// `tid` is a forked child's main thread: its events number on from its parent's.
    public func threadStartsAnew(_ tid: UInt32) { order.startsAnew(tid) }

    /// The events of a thread that is gone that still wait for an earlier one (which, all its
    /// events being read, never comes).
    public func releaseWaiting(of tid: UInt32) -> [TraceEvent] {
        let out = order.releaseAll(of: tid)
        given += UInt64(out.count)
        return out
    }

    /// Gives up what is left: the published events still in the rings or waiting for their
    /// thread's order are read and discarded, with the slots reserved but never published.
    /// `events`: how many; `entries`: how many of them began a call (lost calls: the kind of an
    /// unpublished slot is read from what its writer had written, an entry when unknown).
    public func discardRest() -> (events: UInt64, entries: UInt64) {
        let read = drain(final: true)
        var events = UInt64(read.count), entries = UInt64(read.filter { $0.kind == .entry }.count)
        for r in 0..<rings {
            let head = atomicLoad(header(r) + 8)
            while tails[r] < head {
                let s = slot(r, tails[r])
                let flags = UnsafeMutableRawPointer(s).load(fromByteOffset: 12, as: UInt32.self)
                events += 1
                if (flags >> 16) & 7 == TraceEvent.Kind.entry.rawValue { entries += 1 }
                tails[r] += 1
            }
        }
        given = reserved
        return (events, entries)
    }

    /// Where writers have reserved up to, per ring: every event written so far is below it.
    public var heads: [UInt64] { (0..<rings).map { atomicLoad(header($0) + 8) } }

    /// Whether the reader has read every ring up to `heads` (taken earlier).
    public func hasRead(upTo heads: [UInt64]) -> Bool { zip(tails, heads).allSatisfy { $0 >= $1 } }

    /// Slots reserved but not yet given out (a writer between its reservation and its publish,
    /// or an event the reader holds for one more pass).
    public var pending: UInt64 { reserved &- given }

    static func decode(_ s: UnsafeMutablePointer<UInt64>) -> TraceEvent {
        let raw = UnsafeMutableRawPointer(s)
        let tid = raw.load(fromByteOffset: 8, as: UInt32.self)
        let flags = raw.load(fromByteOffset: 12, as: UInt32.self)
        let kind = TraceEvent.Kind(rawValue: (flags >> 16) & 7) ?? .unwind
        let (function, mask) = TraceProgram.unpack(cookie: s[2])
        // Entry: the string arguments; end: the string return value.
        let copied = kind == .entry ? (mask & 0x3f).nonzeroBitCount : kind == .end ? Int(mask >> 6) : 0
        var strings: [String?] = []
        for i in 0..<min(2, copied) {
            if flags & (UInt32(10) << UInt32(i)) != 0 { strings.append(nil); continue }
            let p = (raw + 104 + i * stringBytes).assumingMemoryBound(to: UInt8.self)
            let n = strnlen(UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self), stringBytes - 1)
            strings.append(String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self))
        }
        return TraceEvent(kind: kind, tid: tid, function: function, ticks: s[3], stackPointer: s[4],
                          args: kind == .entry ? Array(UnsafeBufferPointer(start: s + 7, count: 6)) : [],
                          ret: s[6], strings: strings, lostEnds: s[2] >> 40, sequence: s[5])
    }

    /// The runtime stops writing; with `unmap`, the tracee's mapping goes too (hookit's stays
    /// readable) — only when no thread can still be in a trace program (the table's detach
    /// freed every image). Without, the 16 MiB stay mapped in the tracee, unused.
    public func close(tracee: Tracee, unmap: Bool) {
        try? tracee.memory.write([UInt8].le(UInt64(0)), at: ringSymbol)
        if unmap { try? memory.unmapRemote(tracee: tracee) }
    }
}

@inline(__always) func atomicLoad(_ p: UnsafeMutablePointer<UInt64>) -> UInt64 { hk_load_acquire(p) }
@inline(__always) func atomicStore(_ p: UnsafeMutablePointer<UInt64>, _ v: UInt64) { hk_store_release(p, v) }
