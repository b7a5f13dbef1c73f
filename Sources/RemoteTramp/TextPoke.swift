import Glibc
import Injector

/// Rewriting code in the tracee (the seed's bpf_arch_text_poke): only while every thread is
/// stopped, only after checking that the bytes there are the ones expected (a foreign patch is
/// reported, never overwritten), and as pwrites that each stay within one page and hold whole
/// patches only, so each lands whole even if hookit dies mid-way (design.md, "Text pokes").
enum TextPoke {
    /// One entry patch: the bytes expected at `address` and the bytes to write there.
    struct Write {
        let address: UInt64
        let expected: [UInt8]
        let new: [UInt8]
        let function: String

        /// A poke lands whole only within one page.
        func checkPage() throws {
            precondition(expected.count == new.count && new.count <= 8)
            guard address / 4096 == (address + UInt64(new.count) - 1) / 4096 else {
                throw TrampolineError.cannotPatch(function: function, reason: "the patch at 0x\(String(address, radix: 16)) would cross a page boundary")
            }
        }

        /// The bytes there now must be the expected ones: anything else is someone else's patch.
        func check(found: [UInt8]) throws {
            guard found == expected else {
                throw TrampolineError.foreignPatch(function: function, address: address, found: found, expected: expected,
                                                   what: PatchSite.describeForeign(found.first ?? 0))
            }
        }
    }

    static func poke(_ tracee: Tracee, at address: UInt64, expected old: [UInt8], new: [UInt8], function: String) throws {
        try poke(tracee, Write(address: address, expected: old, new: new, function: function))
    }

    static func poke(_ tracee: Tracee, _ w: Write) throws {
        precondition(tracee.held, "text pokes need the world stopped")
        try w.checkPage()
        try w.check(found: try tracee.memory.read(at: w.address, count: w.expected.count))
        try tracee.memory.writeForced(w.new, at: w.address)
    }

    /// Many pokes in as few writes as can land whole: the patches that lie in one page are
    /// written by one pwrite of the bytes from the first to the last of them — the bytes in
    /// between written back as they are, which nothing can change meanwhile (every thread is
    /// stopped). A single pwrite within one page lands whole even if hookit dies during it, and
    /// each page holds only whole patches (a patch that would span two pages is refused at
    /// analysis), so every state the tracee can be left in has every patch old or new, never
    /// torn. Every site is checked against its expected bytes first; a mismatch (a foreign
    /// patch) throws before anything is written.
    ///
    /// `landed` is called for every write in place (before an error of a later page is thrown).
    static func pokeAll(_ tracee: Tracee, _ writes: [Write], landed: (Write) -> Void) throws {
        precondition(tracee.held, "text pokes need the world stopped")
        let sorted = writes.sorted { $0.address < $1.address }
        var groups: [[Write]] = []
        for w in sorted {
            try w.checkPage()
            if let last = groups.last?.last, last.address / 4096 == w.address / 4096 {
                // Overlapping patches (an entry shorter than the patch) are written one by one.
                if last.address + UInt64(last.new.count) > w.address {
                    return try sorted.forEach { try poke(tracee, $0); landed($0) }
                }
                groups[groups.count - 1].append(w)
            } else {
                groups.append([w])
            }
        }
        let spans = groups.map { g in (address: g[0].address, count: Int(g.last!.address - g[0].address) + g.last!.new.count) }
        let current = try tracee.memory.read(ranges: spans)
        for (g, (span, bytes)) in zip(groups, zip(spans, current)) {
            for w in g {
                let at = Int(w.address - span.address)
                try w.check(found: Array(bytes[at..<at + w.expected.count]))
            }
        }
        for (g, (span, bytes)) in zip(groups, zip(spans, current)) {
            var out = bytes
            for w in g {
                let at = Int(w.address - span.address)
                out.replaceSubrange(at..<at + w.new.count, with: w.new)
            }
            try tracee.memory.writeForced(out, at: span.address)
            g.forEach(landed)
        }
    }

    /// Moves every thread whose PC lies strictly inside [address, address + length) — in the
    /// middle of bytes about to be rewritten — to the equivalent instruction (invariant 1).
    /// A PC exactly at `address` is fine: the thread will execute the new instruction whole.
    ///
    /// `pcs` holds every stopped thread's PC, read once per stop by `threadState`: a batch of pokes
    /// then costs one PTRACE_GETREGS per thread, not one per thread per function. It is kept up
    /// to date here when a thread is moved.
    static func moveThreads(outOf address: UInt64, length: Int, tracee: Tracee, pcs: inout [pid_t: UInt64],
                            translate: (UInt64) -> UInt64?, function: String) throws {
        for (tid, pc) in pcs where pc > address && pc < address + UInt64(length) {
            var regs = try tracee.registers(of: tid)
            guard let to = translate(regs.rip) else {
                throw TrampolineError.cannotPatch(function: function,
                    reason: "thread \(tid) is stopped inside the bytes to patch (0x\(String(regs.rip, radix: 16))) with no equivalent instruction")
            }
            regs.rip = to
            try tracee.setRegisters(regs, of: tid)
            pcs[tid] = to
        }
    }

    /// Every stopped thread's PC and stack pointer, one PTRACE_GETREGS each: a batch of pokes
    /// reads them once per stop, however many functions it patches.
    static func threadState(_ tracee: Tracee) throws -> (pcs: [pid_t: UInt64], sps: [pid_t: UInt64]) {
        var pcs: [pid_t: UInt64] = [:], sps: [pid_t: UInt64] = [:]
        for tid in tracee.threadIDs {
            let r = try tracee.registers(of: tid)
            pcs[tid] = r.rip
            sps[tid] = r.rsp
        }
        return (pcs, sps)
    }

    /// A word near the top of some thread's stack strictly inside (site, site + length) of one
    /// of `sites` (sorted), with the index of that site. A signal handler running on a thread
    /// keeps the interrupted PC in its signal frame there, and `sigreturn` will jump back to it;
    /// a saved PC inside bytes about to be patched cannot be moved (the frame's layout is the
    /// kernel's), so such a patch is refused instead (invariant 1). Every thread's top `bytes`
    /// are read in one vectored read and scanned in place.
    static func signalFrameHit(_ tracee: Tracee, sps: [pid_t: UInt64], stacks extents: inout StackExtents,
                               sites: [UInt64], length: Int, bytes: Int = 16 * 1024) throws -> (site: Int, word: UInt64)? {
        guard let low = sites.first, let high = sites.last.map({ $0 + UInt64(length) }) else { return nil }
        let ranges = sps.keys.sorted().compactMap { extents.range(from: sps[$0]!, limit: bytes) }
        let stacks = (try? tracee.memory.read(ranges: ranges)) ?? []
        for raw in stacks {
            var hit: (Int, UInt64)?
            StackExtents.scanWords(raw) { w in
                guard w > low && w < high else { return false }
                let lo = sites.partitionPoint { $0 >= w }          // the last site below w
                if lo > 0 && w < sites[lo - 1] + UInt64(length) { hit = (lo - 1, w) }
                return hit != nil
            }
            if let h = hit { return h }
        }
        return nil
    }
}

/// Machine code for the entry patch: `jmp rel32` to the image, for both entry styles.
enum EntryPatch {
    static func jmp(from site: UInt64, to target: UInt64) -> [UInt8] { rel32(0xE9, site, target) }

    private static func rel32(_ op: UInt8, _ site: UInt64, _ target: UInt64) -> [UInt8] {
        let rel = UInt32(truncatingIfNeeded: target &- (site + 5))
        return [op, UInt8(rel & 0xFF), UInt8(rel >> 8 & 0xFF), UInt8(rel >> 16 & 0xFF), UInt8(rel >> 24)]
    }
}
