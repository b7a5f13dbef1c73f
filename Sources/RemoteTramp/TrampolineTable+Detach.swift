import Glibc
import Injector

/// Detach in three steps: unregister every entry (restore its bytes, in one stop), wait until
/// no thread can be in hookit's code (short stops while threads leave), free everything (no
/// stop: nothing reaches it any more).
extension TrampolineTable {
    /// The process exited with its hooks in: its images went with it, and so do their lines in
    /// /tmp/perf-PID.map (a later process that reuses the pid must not find them).
    public func processExited() {
        perfMap.write([])
    }

    /// Restores every patched entry exactly, then frees what no thread can still be in. What a
    /// thread may still return into stays mapped and is reported.
    ///
    /// `keeping`: functions whose replace patch stays live after hookit leaves (a live patch):
    /// their image, relocated prologue, code page, unwind information and module references stay;
    /// a later hookit takes such a patch over like any patch of a dead hookit.
    public func detach(waitSeconds: Double = 2, keeping: Set<UInt64> = []) -> TableDetachReport {
        var report = TableDetachReport()
        // The loader patch first: from here on no thread waits for hookit at a notification.
        do { try stopFollowingLoader() } catch { report.problems.append("\(error)") }
        if tracee.execed {
            // A new program image: none of hookit's addresses mean anything in it any more.
            report.problems.append("the process called execve; its new image has none of hookit's patches")
            return report
        }
        // Called with the world stopped, it stays stopped.
        let stopsHere = !tracee.held
        var stacks = StackExtents(pid: tracee.pid)
        if stopsHere { do { try tracee.stopWorld() } catch { report.problems.append("\(error)"); return report } }
        defer { if stopsHere { try? tracee.resumeWorld() } }
        let kept = keeping.filter { a in trampolines[a].map { $0.image != nil && !($0.links[.replace] ?? []).isEmpty } ?? false }
        unregisterAll(but: kept, into: &report)
        if !report.problems.isEmpty {
            // An entry still patched still reaches its image, its counters and its programs'
            // statistics: nothing may be freed.
            report.problems.append("a patch could not be restored; hookit's pages stay mapped")
            return report
        }
        let keep = redirectOriginalSlots(but: kept, into: &report) + kept.compactMap { trampolines[$0]?.relocatedBlock }
        let ranges = retirement.images.map(\.range) + trampolines.values.compactMap(\.relocatedBlock).filter { !keep.contains($0) }
        guard waitUntilQuiescent(ranges, seconds: waitSeconds, stopsHere: stopsHere, stacks: &stacks, into: &report) else { return report }
        freeAll(but: kept, keep: keep, into: &report)
        return report
    }

    /// Restores the entries (but the kept ones), a page of pokes at a time; a site someone else
    /// changed since is reported and left as it is. Needs the world stopped.
    private func unregisterAll(but kept: Set<UInt64>, into report: inout TableDetachReport) {
        let live = order.filter { !kept.contains($0) }.compactMap { a in trampolines[a].flatMap { t in t.image.map { (t, $0) } } }
        let current = (try? tracee.memory.read(ranges: live.map { ($0.0.site.address, PatchSite.patchLength) })) ?? []
        var writes: [TextPoke.Write] = []
        for (i, (t, image)) in live.enumerated() {
            let w = TextPoke.Write(address: t.site.address, expected: t.patchBytes(for: image), new: t.site.original, function: t.label)
            do { if i < current.count { try w.check(found: current[i]) } }
            catch { report.problems.append("\(error)"); continue }
            writes.append(w)
        }
        var restored = Set<UInt64>()
        do { try TextPoke.pokeAll(tracee, writes) { restored.insert($0.address) } }
        catch { report.problems.append("\(error)") }
        for (t, image) in live where restored.contains(t.site.address) {
            _ = t.install(nil)
            retirement.add(image)
            report.restored += 1
        }
    }

    /// A replacement may call the original through its HOOKIT_ORIGINAL pointer at any time, even
    /// after detach: it is pointed at the (restored) function itself; a relocated prologue it may
    /// already have loaded stays mapped for good. Returns those prologues.
    private func redirectOriginalSlots(but kept: Set<UInt64>, into report: inout TableDetachReport) -> [Range<UInt64>] {
        var keep: [Range<UInt64>] = []
        for (slot, function, t) in originalSlots where !kept.contains(function) {
            try? tracee.memory.write([UInt8].le(function), at: slot)
            if let b = t.relocatedBlock { keep.append(b) }
        }
        report.leftMapped += keep.map { "\(Self.hex($0)) (the original of a replaced function)" }
        return keep
    }

    /// Checks, in the stop that restored the entries and then in short stops while threads run on
    /// a little, that no thread can be in `ranges`. false: some stay busy past `seconds` (then
    /// reported as left mapped), or the tracee could not be stopped.
    private func waitUntilQuiescent(_ ranges: [Range<UInt64>], seconds: Double, stopsHere: Bool,
                                    stacks: inout StackExtents, into report: inout TableDetachReport) -> Bool {
        let deadline = Clock.seconds() + seconds
        while true {
            if !tracee.held { do { try tracee.stopWorld() } catch { report.problems.append("\(error)"); return false } }
            let threads = try? TextPoke.threadState(tracee)
            let busy = ImageRetirement.busyRanges(ranges, inflight: retirement.inflight(counters), tracee: tracee, stacks: &stacks,
                                                  threads: threads.map { ($0.pcs, $0.sps) })
            if stopsHere { try? tracee.resumeWorld() }
            if busy.isEmpty { return true }
            if Clock.seconds() >= deadline {
                // Not a failure: a thread blocked inside a hooked function (read, epoll_wait...)
                // or a frame an exception or longjmp skipped will return through this code. It
                // stays, with the counters and module references it uses, and is reported.
                report.leftMapped += busy.map(Self.hex)
                return false
            }
            do {
                if tracee.held {
                    try tracee.resumeWorld()
                    try tracee.pump(seconds: 0.05)
                    try tracee.stopWorld()
                } else {
                    try tracee.pump(seconds: 0.05)
                }
            } catch {
                report.problems.append("\(error)")
                return false
            }
        }
    }

    /// Frees images, prologues, code pages, unwind information, counters and module references;
    /// what `kept` and `keep` still need stays.
    private func freeAll(but kept: Set<UInt64>, keep: [Range<UInt64>], into report: inout TableDetachReport) {
        for image in retirement.takeAll() { release(image) }
        for t in trampolines.values where !kept.contains(t.site.address) {
            if let b = t.relocatedBlock, !keep.contains(b) { code.release(b.lowerBound, size: b.count) }
        }
        report.kept = kept.count
        trampolines = trampolines.filter { kept.contains($0.key) }
        order.removeAll { !kept.contains($0) }
        // A page whose unwind information could not be deregistered stays, and so does the
        // arena holding that information: the unwinder still points into both.
        var deregistered = true
        if kept.isEmpty { perfMap.write([]) } else { writePerfMap() }
        code.unmapEmptyPages(tracee: tracee) { page in
            let ok = deregisterUnwindInfo(page)
            deregistered = deregistered && ok
            return ok
        }
        if !deregistered { report.problems.append("the unwinder kept a trampoline page; it stays mapped") }
        else if kept.isEmpty { data.unmap(tracee: tracee) }     // kept pages' unwind information stays
        counters.unmap(tracee: tracee)
        cells.unmap(tracee: tracee)
        // Nothing of hookit's points into the modules any more (kept originals of replaced
        // functions excepted): give back the references (bpf_trampoline_module_put).
        if keep.isEmpty && kept.isEmpty { pins.unpinAll(tracee: tracee, symbols: symbols) }
        report.unmapped = deregistered && keep.isEmpty
    }

    static func hex(_ r: Range<UInt64>) -> String { "0x\(String(r.lowerBound, radix: 16))-0x\(String(r.upperBound, radix: 16))" }
}
