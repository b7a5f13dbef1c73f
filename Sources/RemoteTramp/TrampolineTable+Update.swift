import Glibc
import Injector

extension TrampolineTable {
    // MARK: - update (the seed's bpf_trampoline_update)

    /// Makes every changed trampoline live: builds its new image from the current lists, then
    /// swaps the entry to it in one poke (register, modify or unregister), then retires the old
    /// image.
    ///
    /// The world is stopped only for what needs every thread still (design.md invariant 1):
    /// the signal-frame and PC checks, the pokes, the retired images' after-call pokes and the
    /// retirement check. Images are built, written and made known to the unwinder before that,
    /// while the process runs: nothing reaches the new code until its entry is poked, and every
    /// poke checks again, inside the stop, that the bytes are still those the plan was made for.
    /// Called with the world stopped, it stays stopped; otherwise it is stopped and resumed here.
    public func update() throws {
        let dirty = order.compactMap { trampolines[$0] }.filter(\.dirty)
        guard !dirty.isEmpty else {
            if tracee.held { collectRetired() }
            return
        }
        var built: [(Trampoline, Image?)] = []
        do {
            for t in dirty { built.append((t, t.programCount == 0 ? nil : try buildImage(t))) }
            try flushCode()
            try registerUnwindInfo()
        } catch {
            for (_, image) in built { if let i = image { release(i) } }
            throw error
        }
        var stacks = StackExtents(pid: tracee.pid)
        let stopsHere = !tracee.held
        if stopsHere {
            do { try tracee.stopWorld() } catch {
                for (_, image) in built { if let i = image { release(i) } }
                throw error
            }
        }
        defer { if stopsHere { try? tracee.resumeWorld() } }
        try swapAll(built, stacks: &stacks)
        if stopsHere { try tracee.resumeWorld() }
        writePerfMap()
    }

    /// The part of `update` that needs the world stopped.
    func swapAll(_ built: [(Trampoline, Image?)], stacks: inout StackExtents) throws {
        precondition(tracee.held, "swaps need the world stopped")
        // A first patch of a site is refused, before any poke of this batch, if a signal frame
        // on some thread's stack would return into the middle of its bytes.
        var (pcs, sps) = try TextPoke.threadState(tracee)
        let firstPatches = built.filter { $0.0.image == nil && $0.1 != nil }.map(\.0).sorted { $0.site.address < $1.site.address }
        if !firstPatches.isEmpty,
           let hit = try TextPoke.signalFrameHit(tracee, sps: sps, stacks: &stacks, sites: firstPatches.map(\.site.address),
                                                 length: PatchSite.patchLength) {
            for (_, image) in built { if let i = image { release(i) } }
            throw TrampolineError.cannotPatch(function: firstPatches[hit.site].label,
                reason: "a thread's stack holds 0x\(String(hit.word, radix: 16)), inside the bytes to patch (an interrupted frame of a running signal handler); try again")
        }
        // 1. every thread out of the bytes to rewrite; 2. every site checked and written, a page
        // at a time (TextPoke.pokeAll); 3. the images installed, the old ones retired.
        var writes: [TextPoke.Write] = []
        do {
            for (t, image) in built {
                if t.image == nil {
                    try TextPoke.moveThreads(outOf: t.site.address, length: PatchSite.patchLength, tracee: tracee,
                                             pcs: &pcs, translate: t.translate, function: t.label)
                }
                writes.append(.init(address: t.site.address, expected: t.currentBytes,
                                    new: image.map(t.patchBytes(for:)) ?? t.site.original, function: t.label))
            }
        } catch {
            for (_, image) in built { if let i = image { release(i) } }
            throw error
        }
        var landed = Set<UInt64>()
        var failure: Error?
        do { try TextPoke.pokeAll(tracee, writes) { landed.insert($0.address) } } catch { failure = error }
        // What landed is live (even if a later page failed); what did not is released.
        for (t, image) in built {
            guard landed.contains(t.site.address) else { if let i = image { release(i) }; continue }
            let old = t.install(image)
            t.unpatchedBytes = t.site.original
            t.dirty = false
            if let o = old { retirement.retire(o, tracee: tracee) }
        }
        if let e = failure { throw e }
        // The threads' PCs and stacks as read for the pokes: a thread moved out of patched
        // bytes has its new PC there.
        collectRetired(stacks: &stacks, threads: (pcs, sps))
    }

    /// Names every live image, retired image and relocated prologue for `perf report`.
    func writePerfMap() {
        var entries: [(start: UInt64, size: Int, name: String)] = []
        for t in trampolines.values {
            let fn = t.site.function.name
            if let i = t.image { entries.append((i.address, i.size, "hookit_trampoline_\(fn)_\(i.selector)")) }
            if let b = t.relocatedBlock { entries.append((b.lowerBound, b.count, "hookit_prologue_\(fn)")) }
        }
        for i in retirement.images { entries.append((i.address, i.size, "hookit_trampoline_retired_\(i.selector)")) }
        perfMap.write(entries.sorted { $0.start < $1.start })
    }

    func buildImage(_ t: Trampoline) throws -> Image {
        let counter = ImageBuilder.needsInflight(t.links) ? try counters.allocate(tracee: tracee) : nil
        var input = ImageBuilder.Input(site: t.site, links: t.links, originalEntry: t.originalEntry,
                                       runtimeRun: programs.runtimeRun, inflightCounter: counter, counters: counters, cells: cells)
        if ImageBuilder.callsOriginal(t.links) { input.stackArgumentBytes = stackArguments.bytes(for: t.site, symbols: symbols) }
        // Code is assembled for the address it runs at, so the space comes first: an upper
        // bound, whose unused tail goes straight back to the allocator (and is the next
        // image's start, which keeps a page's images contiguous for flushCode).
        let bound = Self.imageSizeBound(t)
        let address = try code.allocate(bound, kind: .image, near: t.site.module, tracee: tracee)
        let built: ImageBuilder.Built
        let size: Int
        do {
            built = try ImageBuilder.build(input, at: address)
            guard built.code.count <= bound else { throw TrampolineError.cannotPatch(function: t.label, reason: "internal error: image larger than its bound") }
            size = code.shrink(address, from: bound, to: built.code.count)
            batch.queue(built.code, at: address, size: size)
        } catch {
            code.release(address, size: bound)
            if let c = counter { counters.release(c) }
            throw error
        }
        return Image(address: address, size: size, selector: t.selector + 1, inflightCounter: counter,
                     afterCall: built.afterCallOffset.map { address + UInt64($0) },
                     epilogue: built.epilogueOffset.map { address + UInt64($0) })
    }
}
