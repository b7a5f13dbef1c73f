import Glibc
import Injector

/// Counters with one 8-byte cell per CPU, the kernel's percpu idea brought to the tracee: a
/// thread increments the cell of the CPU it runs on, so threads on different CPUs never fight
/// over a cache line; the value is the sum of the cells. The CPU number is one thread-local load
/// from the thread's rseq area (glibc registers it: `fs:[__rseq_offset + 4]` is cpu_id).
///
/// The increment is a plain `inc` inside an rseq critical section — the kernel's this_cpu_inc
/// with preemption off, in user space: if the thread is preempted, migrated or signalled between
/// reading its CPU number and the increment (the commit), the kernel restarts it at the abort
/// handler, which retries. So a cell is only ever written by the one thread running on its CPU,
/// and every count stays exact without a locked instruction. A cell may go negative (an
/// in-flight count raised on one CPU, lowered on another); only the sum means anything.
/// Without rseq (or for a thread that has not registered it, cpu_id = -1 or -2), the increment
/// is a `lock inc` on CPU 0's cell.
final class PerCPUCounters {
    /// Bytes between one CPU's cells and the next: 2M counters per CPU (a timed count takes 67:
    /// 10,000 counted functions fit), each CPU's in its own pages, so cells of different CPUs
    /// never share a cache line. Only touched pages take memory. Must equal
    /// HOOKIT_RT_CPU_STRIDE (hookit_rt.h).
    static let stride: UInt64 = 1 << 24
    static let strideShift: UInt8 = 24

    let cpus: Int
    /// fs-relative offset of the thread's rseq cpu_id; nil when the tracee has no rseq.
    let cpuIDOffset: Int32?
    private(set) var base: UInt64 = 0
    private var next = 0
    private var free: [Int] = []

    /// Shared with hookit (statistics, program data: readable in place and after the tracee
    /// exits), or private to the tracee (in-flight counts: a child the tracee forks gets its
    /// own copy, so its threads never hold the parent's images busy).
    let sharedWithHookit: Bool

    init(cpus: Int, cpuIDOffset: Int32?, sharedWithHookit: Bool) {
        self.cpus = cpuIDOffset == nil ? 1 : cpus
        self.cpuIDOffset = cpuIDOffset
        self.sharedWithHookit = sharedWithHookit
    }

    /// The CPUs this machine can have (/sys/devices/system/cpu/possible, e.g. "0-63").
    static func possibleCPUs() -> Int {
        guard let text = try? ProcFS.read("/sys/devices/system/cpu/possible") else { return 1 }
        let last = text.split(whereSeparator: { $0 == "," || $0 == "-" || $0 == "\n" || $0 == " " }).last
        return (last.flatMap { Int($0) } ?? 0) + 1
    }

    /// Where the tracee's threads find their CPU number: glibc's __rseq_offset, if registered.
    static func rseqCPUIDOffset(symbols: SymbolTable, memory: RemoteMemory) -> Int32? {
        guard let offAddr = symbols.anySymbol("__rseq_offset"), let sizeAddr = symbols.anySymbol("__rseq_size"),
              let off = try? memory.readU64(at: offAddr), let size = try? memory.read(at: sizeAddr, count: 4),
              size.contains(where: { $0 != 0 }) else { return nil }
        let offset = Int64(bitPattern: off) + 4                      // struct rseq: cpu_id_start, cpu_id
        return offset >= Int64(Int32.min) && offset <= Int64(Int32.max) ? Int32(offset) : nil
    }

    /// Shared cells: hookit reads them with plain loads (SharedMemory).
    private var shared: SharedMemory?
    /// Private cells: read through the tracee's memory.
    private var memory: RemoteMemory?

    private func mapIfNeeded(_ tracee: Tracee) throws {
        if base != 0 { return }
        if sharedWithHookit {
            let m = try SharedMemory(tracee: tracee, length: Int(Self.stride) * cpus, name: "hookit-counters")
            shared = m
            base = m.remote
        } else {
            base = try tracee.mmap(length: Self.stride * UInt64(cpus), protection: PROT_READ | PROT_WRITE)
            memory = tracee.memory
        }
    }

    /// A zeroed counter.
    func allocate(tracee: Tracee) throws -> Int {
        try mapIfNeeded(tracee)
        if let i = free.popLast() {
            for c in 0..<cpus {
                if shared != nil { localCell(i, cpu: c).pointee = 0 }
                else { try tracee.memory.write([UInt8](repeating: 0, count: 8), at: cell(i, cpu: c)) }
            }
            return i
        }
        guard next < Int(Self.stride / 8) else { throw TrampolineError.counterSpace(limit: Int(Self.stride / 8)) }
        defer { next += 1 }
        return next
    }

    func release(_ index: Int) { free.append(index) }

    /// `count` consecutive counters (struct hookit_rt_stats, a timing block, override settings);
    /// the index of the first. Never reused: a small, per-link cost.
    func allocateBlock(_ count: Int, tracee: Tracee) throws -> Int {
        try mapIfNeeded(tracee)
        guard next + count <= Int(Self.stride / 8) else { throw TrampolineError.counterSpace(limit: Int(Self.stride / 8)) }
        defer { next += count }
        return next
    }

    func allocateTriple(tracee: Tracee) throws -> Int { try allocateBlock(3, tracee: tracee) }

    /// hookit's view of a cell.
    func localCell(_ index: Int, cpu: Int) -> UnsafeMutablePointer<UInt64> {
        (shared!.local + cpu * Int(Self.stride) + index * 8).assumingMemoryBound(to: UInt64.self)
    }

    func cell(_ index: Int, cpu: Int) -> UInt64 { base + UInt64(cpu) * Self.stride + UInt64(index) * 8 }

    /// The counter's value: the sum of its cells.
    /// nil when private cells cannot be read (the tracee is gone).
    func read(_ index: Int) -> Int64? {
        var sum: Int64 = 0
        if shared != nil {
            for c in 0..<cpus { sum &+= Int64(bitPattern: atomicLoad(localCell(index, cpu: c))) }
        } else {
            guard let memory, base != 0 else { return nil }
            for c in 0..<cpus {
                guard let v = try? memory.readU64(at: cell(index, cpu: c)) else { return nil }
                sum &+= Int64(bitPattern: v)
            }
        }
        return sum
    }

    /// One rseq critical section's descriptor (struct rseq_cs), emitted after the code.
    struct CriticalSection { let descriptor: Label, start: Label, commit: Label, abort: Label }

    /// glibc's RSEQ_SIG on x86: the kernel checks these 4 bytes just before every abort handler.
    static let rseqSignature: UInt32 = 0x5305_3053

    /// Code that adds one to (or takes one from) the counter. Clobbers rax, r11 and the flags.
    /// Critical sections used are appended to `sections`; `emitDescriptors` must follow the code.
    func emitIncrement(_ w: X86Writer, _ index: Int, by delta: Int = 1, sections: inout [CriticalSection]) {
        guard let cpuID = cpuIDOffset else {
            w.zeroEAX()
            w.mov(.r11, imm: cell(index, cpu: 0))
            if delta > 0 { w.lockInc(.r11, index: .rax) } else { w.lockDec(.r11, index: .rax) }
            return
        }
        let rseqCS = cpuID + 4                        // struct rseq: cpu_id at +4, rseq_cs at +8
        let cs = CriticalSection(descriptor: w.newLabel(), start: w.newLabel(), commit: w.newLabel(), abort: w.newLabel())
        let arm = w.newLabel(), unregistered = w.newLabel(), done = w.newLabel()
        w.bind(arm)
        w.leaRIP(.r11, cs.descriptor)
        w.storeFS(.r11, rseqCS)                       // the section starts right after this store
        w.bind(cs.start)
        w.loadFS32(eax: cpuID)
        w.cmpEAX(UInt32(cpus))
        w.jcc(.ae, unregistered)
        w.shlRAX(Self.strideShift)
        w.mov(.r11, imm: cell(index, cpu: 0))
        if delta > 0 { w.inc(.r11, index: .rax) } else { w.dec(.r11, index: .rax) }   // commit
        w.bind(cs.commit)
        // Disarm: the descriptor lives in the image, which may be freed later.
        w.clearFS(rseqCS)
        w.jmp(done)
        w.raw([0x0F, 0xB9, 0x3D]); w.u32(Self.rseqSignature)      // ud1: the signature, never run
        w.bind(cs.abort)
        w.jmp(arm)
        w.bind(unregistered)
        w.clearFS(rseqCS)
        w.mov(.r11, imm: cell(index, cpu: 0))
        if delta > 0 { w.lockInc(.r11, 0) } else { w.lockDec(.r11, 0) }
        w.bind(done)
        sections.append(cs)
    }

    /// The struct rseq_cs of each section: version, flags, start_ip, post_commit_offset,
    /// abort_ip; 32-byte aligned, after the code (never executed).
    static func emitDescriptors(_ w: X86Writer, _ sections: [CriticalSection]) {
        for cs in sections {
            w.alignAbsolute(32)
            w.bind(cs.descriptor)
            w.u32(0); w.u32(0)
            w.quad(cs.start)
            w.quad(cs.commit, minus: cs.start)
            w.quad(cs.abort)
        }
    }

    /// Unmaps the tracee's side; hookit can still read the last values.
    func unmap(tracee: Tracee) {
        // `base` stays: it still names the cells hookit reads (through its own mapping).
        if let m = shared { try? m.unmapRemote(tracee: tracee) }
        else if base != 0, memory != nil, (try? tracee.munmap(address: base, length: Self.stride * UInt64(cpus))) != nil { memory = nil }
    }
}
