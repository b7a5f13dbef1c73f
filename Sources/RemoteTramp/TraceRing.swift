import CPtrace
import Glibc
import Injector

/// One traced call, as hookit_rt_trace_exit wrote it.
public struct TraceEvent: Sendable {
    public var tid: UInt32
    /// The function's index (the low half of the trace link's cookie).
    public var function: Int
    /// Entry time and duration in TSC ticks; `timed` is false when the entry was not seen.
    public var ticks: UInt64
    public var durationTicks: UInt64
    public var timed: Bool
    public var args: [UInt64]
    public var ret: UInt64
    /// Copies of the arguments (or return value) marked as strings, in order, at most two; nil
    /// for a null or unreadable pointer.
    public var strings: [String?]
}

/// The trace ring: a memfd shared by the tracee's threads (writers, hookit_rt_trace_exit, any
/// number at once, lock-free) and hookit (the one reader). The layout is trace.c's.
///
///     0      header: magic, capacity, slot size; head at 64; dropped at 128
///     4096   capacity slots of 256 bytes: seq, tid, flags, cookie, ts, dur, args[6], ret, str[2][80]
///
/// Slot turns (seq): a writer takes position p when the slot holds p and publishes p + 1; the
/// reader consumes p when it holds p + 1 and hands it to the next lap with p + capacity. A full
/// ring makes writers count a drop and return: the tracee never waits for hookit.
public final class TraceRing {
    static let slotSize = 256
    static let headerSize = 4096
    public let capacity: Int
    let memory: SharedMemory
    private var tail: UInt64 = 0
    private let ringSymbol: UInt64

    /// Maps a ring of `capacity` slots (a power of two) and points the runtime at it. Needs the
    /// world stopped and the runtime loadable.
    public init(table: TrampolineTable, capacity: Int = 1 << 16) throws {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0)
        self.capacity = capacity
        ringSymbol = try table.runtimeSymbol("hookit_rt_ring")
        memory = try SharedMemory(tracee: table.tracee, length: Self.headerSize + capacity * Self.slotSize, name: "hookit-trace")
        let words = memory.local.assumingMemoryBound(to: UInt64.self)
        words[0] = 0x3130_474E_4952_4B48      // "HKRING01"
        words[1] = UInt64(capacity)
        words[2] = UInt64(Self.slotSize)
        for i in 0..<capacity { slot(i)[0] = UInt64(i) }
        try table.tracee.memory.write([UInt8].le(memory.remote), at: ringSymbol)
    }

    private func slot(_ i: Int) -> UnsafeMutablePointer<UInt64> {
        (memory.local + Self.headerSize + i * Self.slotSize).assumingMemoryBound(to: UInt64.self)
    }

    /// Events writers gave up because the ring was full.
    public var dropped: UInt64 { atomicLoad(memory.local.assumingMemoryBound(to: UInt64.self) + 16) }

    /// Positions reserved by writers so far.
    public var reserved: UInt64 { atomicLoad(memory.local.assumingMemoryBound(to: UInt64.self) + 8) }

    /// The complete events available now, in ring order (per thread, the order the calls
    /// returned), at most `max`. A reserved slot still being written ends the batch: the next
    /// call continues there.
    public func drain(max: Int = .max) -> [TraceEvent] {
        var out: [TraceEvent] = []
        while out.count < max {
            let s = slot(Int(tail & UInt64(capacity - 1)))
            guard atomicLoad(s) == tail + 1 else { break }
            out.append(Self.decode(s))
            atomicStore(s, tail + UInt64(capacity))
            tail += 1
        }
        return out
    }

    /// Slots reserved but not yet complete (a writer between its reservation and its publish).
    public var pending: UInt64 { reserved &- tail }

    static func decode(_ s: UnsafeMutablePointer<UInt64>) -> TraceEvent {
        let raw = UnsafeMutableRawPointer(s)
        let tid = raw.load(fromByteOffset: 8, as: UInt32.self)
        let flags = raw.load(fromByteOffset: 12, as: UInt32.self)
        let cookie = s[2]
        var strings: [String?] = []
        let mask = (cookie >> 32) & 0x7f
        for i in 0..<min(2, mask.nonzeroBitCount) {
            if flags & (UInt32(10) << UInt32(i)) != 0 { strings.append(nil); continue }
            let p = (raw + 96 + i * 80).assumingMemoryBound(to: UInt8.self)
            strings.append(String(decoding: UnsafeBufferPointer(start: p, count: strnlen(UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self), 79)), as: UTF8.self))
        }
        return TraceEvent(tid: tid, function: Int(cookie & 0xFFFF_FFFF), ticks: s[3], durationTicks: s[4], timed: flags & 1 == 0,
                          args: Array(UnsafeBufferPointer(start: s + 5, count: 6)), ret: s[11], strings: strings)
    }

    /// The runtime stops writing; with `unmap`, the tracee's mapping goes too (hookit's stays
    /// readable) — only when no thread can still be in a trace program (the table's detach
    /// freed every image). Without, the 16 MiB stay mapped in the tracee, unused.
    public func close(tracee: Tracee, unmap: Bool) {
        try? tracee.memory.write([UInt8].le(0), at: ringSymbol)
        if unmap { try? memory.unmapRemote(tracee: tracee) }
    }
}

@inline(__always) func atomicLoad(_ p: UnsafeMutablePointer<UInt64>) -> UInt64 { hk_load_acquire(p) }
@inline(__always) func atomicStore(_ p: UnsafeMutablePointer<UInt64>, _ v: UInt64) { hk_store_release(p, v) }
