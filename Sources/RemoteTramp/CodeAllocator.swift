import Glibc
import Injector

/// Executable pages in the tracee for trampoline images, each within ±2 GiB of the module whose
/// functions it serves, so a 5-byte `jmp rel32` at a function's entry reaches its image (the
/// seed's bpf_jit_alloc_exec_page; placement as uprobes and Orbit do). Several images share a
/// page; memory is charged against a per-session budget (bpf_jit_charge_modmem).
///
/// Pages are mapped r-x and written through /proc/PID/mem, so the tracee never has a writable
/// and executable mapping.
final class CodeAllocator {
    /// Images and relocated prologues live in different pages: their frames unwind by
    /// different rules (see UnwindInfo), and one rule is registered per page.
    enum Kind { case image, prologue }

    struct Page {
        let address: UInt64
        let size: UInt64
        let kind: Kind
        var free: [(offset: UInt64, size: UInt64)]
        /// The page's .eh_frame data in the tracee, once registered with the unwinder.
        var unwindInfo: UInt64?

        var range: Range<UInt64> { address..<address + size }
    }

    static let pageSize: UInt64 = 64 * 1024
    /// The first bytes of every code page: how a later hookit recognizes the pages, and so the
    /// entry patches, of one that was killed (see PatchSite.leftoverPatch). Never executed.
    static let magic: [UInt8] = Array("HOOKIT\u{0}\u{1}".utf8)
    static let headerSize: UInt64 = 16
    static let granule: UInt64 = 16
    static let reach: UInt64 = 0x7FF0_0000          // a little under 2 GiB, for rel32 either way

    private(set) var pages: [Page] = []
    let budget: Int
    private(set) var charged = 0

    init(budget: Int) { self.budget = budget }

    /// `size` bytes of code within rel32 reach of every byte of `module`.
    func allocate(_ size: Int, kind: Kind, near module: Module, tracee: Tracee) throws -> UInt64 {
        let need = (UInt64(size) + Self.granule - 1) & ~(Self.granule - 1)
        for i in pages.indices where pages[i].kind == kind && inReach(pages[i], module) {
            if let a = take(need, from: &pages[i]) { return a }
        }
        if charged + Int(Self.pageSize) > budget {
            throw TrampolineError.memoryBudget(limit: budget, requested: Int(Self.pageSize))
        }
        var page = try mapPage(near: module, kind: kind, tracee: tracee)
        charged += Int(page.size)
        let a = take(need, from: &page)!
        pages.append(page)
        return a
    }

    /// Gives back the tail of an allocation of `from` bytes that needs only `to`; returns the
    /// size it keeps (rounded to the granule).
    func shrink(_ address: UInt64, from: Int, to: Int) -> Int {
        let g = Int(Self.granule)
        let keep = (to + g - 1) / g * g
        let had = (from + g - 1) / g * g
        if had > keep { release(address + UInt64(keep), size: had - keep) }
        return keep
    }

    func release(_ address: UInt64, size: Int) {
        let len = (UInt64(size) + Self.granule - 1) & ~(Self.granule - 1)
        guard let i = pages.firstIndex(where: { address >= $0.address && address < $0.address + $0.size }) else { return }
        pages[i].free.append((address - pages[i].address, len))
        pages[i].free.sort { $0.offset < $1.offset }
        var merged: [(offset: UInt64, size: UInt64)] = []
        for f in pages[i].free {
            if let last = merged.last, last.offset + last.size == f.offset { merged[merged.count - 1].size += f.size }
            else { merged.append(f) }
        }
        pages[i].free = merged
    }

    /// Pages whose unwind information is not registered yet.
    var unregisteredPages: [Int] { pages.indices.filter { pages[$0].unwindInfo == nil } }

    func setUnwindInfo(_ address: UInt64, forPage i: Int) { pages[i].unwindInfo = address }

    /// Unmaps every page with nothing allocated in it; `beforeUnmap` runs first for each (to
    /// deregister its unwind information while the page still exists).
    func unmapEmptyPages(tracee: Tracee, beforeUnmap: (Page) -> Bool = { _ in true }) {
        pages.removeAll { page in
            guard page.free.count == 1, page.free[0].size == page.size - Self.headerSize else { return false }
            guard beforeUnmap(page) else { return false }
            if (try? tracee.munmap(address: page.address, length: page.size)) != nil {
                charged -= Int(page.size)
                return true
            }
            return false
        }
    }

    private func take(_ need: UInt64, from page: inout Page) -> UInt64? {
        guard let j = page.free.firstIndex(where: { $0.size >= need }) else { return nil }
        let a = page.address + page.free[j].offset
        page.free[j].offset += need
        page.free[j].size -= need
        if page.free[j].size == 0 { page.free.remove(at: j) }
        return a
    }

    private func inReach(_ page: Page, _ m: Module) -> Bool {
        page.address + page.size <= m.start &+ Self.reach && page.address + Self.reach >= m.end
    }

    /// The free range of the address space closest to the module, mapped with
    /// MAP_FIXED_NOREPLACE so nothing of the tracee's is ever replaced.
    private func mapPage(near m: Module, kind: Kind, tracee: Tracee) throws -> Page {
        let maps = try ProcMaps.read(tracee.pid).sorted { $0.start < $1.start }
        let low = m.end > Self.reach ? m.end - Self.reach : 0x10000
        let high = m.start + Self.reach
        var candidates: [UInt64] = []
        var prevEnd: UInt64 = 0x10000
        let starts = maps.map(\.start) + [0x7FFF_FFFF_F000]     // the top of user space closes the last gap
        for (i, start) in starts.enumerated() {
            let gapStart = max(prevEnd, low), gapEnd = min(start, high)
            if gapEnd > gapStart && gapEnd - gapStart >= Self.pageSize {
                // Prefer the end of a gap below the module, or the start of a gap above it.
                candidates.append(gapEnd <= m.start ? (gapEnd - Self.pageSize) & ~0xFFFF : (gapStart + 0xFFFF) & ~0xFFFF)
            }
            if i < maps.count { prevEnd = max(prevEnd, maps[i].end) }
        }
        candidates.sort { distance($0, m) < distance($1, m) }
        for addr in candidates where addr >= low && addr + Self.pageSize <= high {
            let flags = MAP_PRIVATE | MAP_ANONYMOUS | 0x100000   // MAP_FIXED_NOREPLACE
            if let got = try? tracee.mmap(address: addr, length: Self.pageSize, protection: PROT_READ | PROT_EXEC, flags: flags),
               got == addr {
                try tracee.memory.writeForced(Self.magic, at: got)
                return Page(address: got, size: Self.pageSize, kind: kind,
                            free: [(Self.headerSize, Self.pageSize - Self.headerSize)])
            }
        }
        throw TrampolineError.noPageInReach(module: m.name)
    }

    private func distance(_ a: UInt64, _ m: Module) -> UInt64 { a < m.start ? m.start - a : a - m.end }
}

/// Read-write memory in the tracee for data the unwinder keeps pointers to (.eh_frame).
/// Counters live in PerCPUCounters.
final class DataArena {
    private(set) var base: UInt64 = 0
    static let size: UInt64 = 256 * 1024
    private var next: UInt64 = 0

    /// `bytes` copied into the arena (never released: small, one per code page).
    func store(_ bytes: [UInt8], tracee: Tracee) throws -> UInt64 {
        if base == 0 { base = try tracee.mmap(length: Self.size, protection: PROT_READ | PROT_WRITE) }
        let need = (UInt64(bytes.count) + 31) & ~31
        guard next + need <= Self.size else { throw TrampolineError.memoryBudget(limit: Int(Self.size), requested: Int(need)) }
        let at = base + next
        next += need
        try tracee.memory.write(bytes, at: at)
        return at
    }

    func unmap(tracee: Tracee) {
        if base != 0, (try? tracee.munmap(address: base, length: Self.size)) != nil { base = 0 }
    }
}
