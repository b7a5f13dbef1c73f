import CPtrace
import Glibc
import Injector

/// What to run: the built-in count, or a symbol of a library to load into the tracee.
public enum ProgramSpec: Equatable, Sendable {
    case count
    case user(library: String, symbol: String)
    /// A program of libhookit_rt.so (hookit_rt_trace_exit, ...), given its data by the cookie.
    case runtime(symbol: String)
}

/// The trampolines of one tracee, keyed by function address (the seed's trampoline_table),
/// with link/unlink of programs and the update that rebuilds an image and swaps the entry.
///
/// Concurrency: the tracee's threads execute images while hookit changes them. Links, image
/// building and writing happen while the process runs — new code and data are unreachable until
/// a poke — and every poke is made while the world is stopped (`update` stops it for just that),
/// in an order where each intermediate state is valid: a new image is written completely before
/// the entry is poked to reach it; a thread in the middle of the bytes being poked is moved
/// first; an old image is only retired — freed later, when no thread can be in it (see
/// ImageRetirement).
public final class TrampolineTable {
    public struct Options: Sendable {
        /// The seed's BPF_MAX_TRAMP_LINKS.
        public var maxPrograms = 38
        public var memoryBudget = 64 << 20
        /// libhookit_rt.so, loaded into the tracee when the first user program is attached.
        public var runtimeLibrary: String?
        /// Time each user program run (the seed's bpf_stats_enabled_key; off by default, as
        /// there: two TSC reads per run). Counting runs and misses is always on.
        public var timePrograms = false
        public init() {}
    }

    public let tracee: Tracee
    private(set) var symbols: SymbolTable
    let options: Options
    let code: CodeAllocator
    let data = DataArena()
    /// In-flight counts of images (private to the tracee).
    let counters: PerCPUCounters
    /// Built-in counts, program statistics and program data (shared with hookit).
    let cells: PerCPUCounters
    private var trampolines: [UInt64: Trampoline] = [:]
    private var order: [UInt64] = []
    public private(set) var links: [Int: Link] = [:]
    private var nextLinkID = 1
    private var libraries: [String: UInt64] = [:]       // path -> dlopen handle
    private var runtimeRun: UInt64?
    private var runtimeSymbols: [String: UInt64] = [:]
    private let stackArguments = StackArgumentCache()
    var retired: [Image] = []
    /// Code written to the tracee in batches: allocations in a page are contiguous, so one
    /// pwrite covers many images (thousands of functions cost a few writes, not thousands).
    private var pendingCode: [(address: UInt64, bytes: [UInt8])] = []
    private let perfMap: PerfMap
    /// dlopen references on the shared objects holding hooked functions (the seed's
    /// bpf_trampoline_module_get): the tracee cannot unload them while they are hooked.
    private var pinned: [String: UInt64] = [:]
    /// Entries analysed before the world was stopped (`prepare`).
    private var prepared: [UInt64: PatchSite] = [:]
    /// HOOKIT_ORIGINAL variables handed out, with the function they call.
    private var originalSlots: [(slot: UInt64, function: UInt64, trampoline: Trampoline)] = []

    public init(tracee: Tracee, symbols: SymbolTable, options: Options = Options()) {
        self.tracee = tracee
        self.symbols = symbols
        self.options = options
        self.code = CodeAllocator(budget: options.memoryBudget)
        self.perfMap = PerfMap(pid: tracee.pid)
        let cpuID = PerCPUCounters.rseqCPUIDOffset(symbols: symbols, memory: tracee.memory)
        self.counters = PerCPUCounters(cpus: PerCPUCounters.possibleCPUs(), cpuIDOffset: cpuID, sharedWithHookit: false)
        self.cells = PerCPUCounters(cpus: PerCPUCounters.possibleCPUs(), cpuIDOffset: cpuID, sharedWithHookit: true)
    }

    func trampoline(at address: UInt64) -> Trampoline? { trampolines[address] }

    /// A newer view of the tracee's modules (a library loaded after attach can then be hooked).
    public func useSymbols(_ newer: SymbolTable) { symbols = newer }

    /// Bytes of trampoline code in use: live images and relocated prologues.
    public var codeBytesUsed: Int {
        trampolines.values.reduce(0) { $0 + ($1.image?.size ?? 0) + ($1.relocatedBlock?.count ?? 0) }
    }

    /// Bytes of code pages mapped in the tracee (charged against the memory budget).
    public var codeBytesMapped: Int { code.charged }

    /// Functions with a live patch, in the order they were first hooked.
    public var hookedFunctions: [FunctionSymbol] { order.compactMap { trampolines[$0]?.site.function } }

    // MARK: - prepare

    /// Reads and checks the entries of `functions` (foreign patches, relocation) while the
    /// tracee runs, so that the stop in which they are linked is short. Nothing is written.
    /// Returns the functions refused, with the reason; the others are linked faster later.
    /// What is read here is checked again by every poke (the bytes must still be the same).
    public func prepare(_ functions: [FunctionSymbol]) -> [(function: FunctionSymbol, error: Error)] {
        var refused: [(FunctionSymbol, Error)] = []
        for f in functions where trampolines[f.address] == nil && prepared[f.address] == nil {
            guard let module = symbols.modules.first(where: { $0.name == f.module && $0.contains(f.address) }) else { continue }
            do { prepared[f.address] = try PatchSite.analyze(f, module: module, tracee: tracee) }
            catch { refused.append((f, error)) }
        }
        return refused
    }

    // MARK: - link / unlink (the seed's bpf_trampoline_link_prog / unlink_prog)

    /// Adds a program to a function's lists. The change goes live at the next `update()`.
    @discardableResult
    ///
    /// `raw`: for a replacement, jump to it bare even if it may change registers the original
    /// keeps (a caller compiled with -fipa-ra can then see them changed); the caller's choice.
    public func link(_ kind: ProgramKind, _ spec: ProgramSpec, to function: FunctionSymbol, cookie: UInt64 = 0,
                     raw: Bool = false) throws -> Link {
        let label = "\(function.module):\(function.name)"
        if spec == .count && (kind == .fmodRet || kind == .replace) {
            throw TrampolineError.unsupported(kind: kind.rawValue, program: "count",
                reason: "it runs as fentry or fexit (as fmod_ret it would decide nothing; replace needs a function)")
        }
        // Everything that can refuse does so before anything is loaded into the tracee
        // (invariant 6): the entry is analysed and the program's symbol looked up in the file.
        let trampoline = try get(function)
        // A trampoline made for this link alone goes again if the link is refused (get/put).
        var linked = false
        defer { if !linked { put(trampoline) } }
        try checkCanLink(kind, spec, trampoline, label)
        if case .user(let library, let symbol) = spec, libraries[library] == nil {
            try Self.checkLibraryExports(library, symbol, pid: tracee.pid)
        }
        let program = try resolve(spec, kind: kind, function: function)
        // The replacement's HOOKIT_ORIGINAL(name) variable, through which it calls the original.
        var originalSlot: UInt64?
        if kind == .replace, case .user(let lib, _, _) = program, let handle = libraries[lib] {
            originalSlot = try tracee.dlsym(handle: handle, name: "hookit_original_\(function.name)", symbols: symbols)
        }
        let givesBack: RegisterSet
        if kind == .replace, !raw, case .user(_, _, let address) = program {
            givesBack = try registersToGiveBack(original: trampoline.site, replacement: address, originalSlot: originalSlot)
        } else {
            givesBack = []
        }
        let counter = program == .count ? try cells.allocate(tracee: tracee) : nil
        let stats = program == .count ? nil : cells.cell(try cells.allocateTriple(tracee: tracee), cpu: 0)
        let link = Link(id: nextLinkID, kind: kind, code: program, cookie: cookie, function: function,
                        statsAddress: stats, counter: counter)
        nextLinkID += 1
        link.givesBack = givesBack
        if kind != .replace, case .user(_, _, let address) = program {
            link.changesVectorState = try programChangesVectorState(address)
        }
        if let slot = originalSlot {
            // Hand the replacement the original.
            try tracee.memory.write([UInt8].le(trampoline.originalEntry), at: slot)
            originalSlots.append((slot, function.address, trampoline))
        }
        trampoline.links[kind, default: []].append(link)
        trampoline.dirty = true
        links[link.id] = link
        linked = true
        return link
    }

    /// Puts an unlinked program back in its lists (a removal rolled back). Live at `update()`.
    func relink(_ link: Link) {
        guard let t = trampolines[link.function.address], links[link.id] == nil else { return }
        t.links[link.kind, default: []].append(link)
        t.dirty = true
        links[link.id] = link
    }

    /// Removes a program. The change goes live at the next `update()`.
    public func unlink(_ id: Int) throws {
        guard let link = links.removeValue(forKey: id), let t = trampolines[link.function.address] else {
            throw TrampolineError.unknownLink(id: id)
        }
        t.links[link.kind]?.removeAll { $0.id == id }
        t.dirty = true
    }

    private func checkCanLink(_ kind: ProgramKind, _ spec: ProgramSpec, _ t: Trampoline, _ label: String) throws {
        let hasReplace = !(t.links[.replace] ?? []).isEmpty
        let hasOthers = t.programCount - (t.links[.replace]?.count ?? 0) > 0
        if kind == .replace && (hasReplace || hasOthers) {
            throw TrampolineError.busy(function: label, reason: hasReplace ? "it is already replaced" : "replace excludes the fentry/fexit/fmod_ret programs attached to it")
        }
        if kind != .replace && hasReplace {
            throw TrampolineError.busy(function: label, reason: "it is replaced, which excludes other programs")
        }
        if (t.links[kind] ?? []).contains(where: { $0.code.spec == spec }) {
            throw TrampolineError.alreadyAttached(function: label, program: "\(kind.rawValue) \(spec.name)")
        }
        if t.programCount >= options.maxPrograms {
            throw TrampolineError.tooManyPrograms(function: label, limit: options.maxPrograms)
        }
    }

    /// The trampoline for a function, created on first use (the seed's bpf_trampoline_get).
    private func get(_ f: FunctionSymbol) throws -> Trampoline {
        if let t = trampolines[f.address] { return t }
        guard let module = symbols.modules.first(where: { $0.name == f.module && $0.contains(f.address) }) else {
            throw TrampolineError.cannotPatch(function: "\(f.module):\(f.name)", reason: "its module is not mapped")
        }
        let site = try prepared.removeValue(forKey: f.address) ?? PatchSite.analyze(f, module: module, tracee: tracee)
        try pin(module)
        let t: Trampoline
        switch site.style {
        case .patchable:
            t = Trampoline(site: site, relocatedBlock: nil, originalEntry: site.afterPatch)
        case .relocated(let probe, let body, let trailing):
            let bound = probe.code.count + 64          // far forms may be longer at another address
            let block = try code.allocate(bound, kind: .prologue, near: module, tracee: tracee)
            let final: RelocatedPrologue
            let size: Int
            do {
                final = try Relocator.relocate(function: body, trailing: trailing, address: f.address, destination: block)
                guard final.code.count <= bound else { throw TrampolineError.cannotPatch(function: site.label, reason: "internal error: relocated prologue larger than its bound") }
                size = code.shrink(block, from: bound, to: final.code.count)
            } catch {
                code.release(block, size: bound)
                throw TrampolineError.cannotPatch(function: site.label, reason: "\(error)")
            }
            queueCode(final.code, at: block, size: size)
            let relocatedSite = PatchSite(function: f, module: module, address: site.address, original: site.original,
                                          style: .relocated(final, body: body, trailing: trailing), found: site.found)
            t = Trampoline(site: relocatedSite, relocatedBlock: block..<block + UInt64(size), originalEntry: block)
        }
        trampolines[f.address] = t
        order.append(f.address)
        return t
    }

    /// The undo of `get` (the seed's bpf_trampoline_put) for a trampoline that has no program
    /// and was never live: its relocated prologue goes back to the allocator (no thread can have
    /// reached it) and the table forgets it. A trampoline that was live stays: threads may still
    /// be in its relocated prologue, which detach retires with everything else.
    func put(_ t: Trampoline) {
        guard t.programCount == 0, t.image == nil, t.selector == 0, trampolines[t.site.function.address] === t else { return }
        if let b = t.relocatedBlock {
            pendingCode.removeAll { $0.address == b.lowerBound }
            code.release(b.lowerBound, size: b.count)
        }
        trampolines[t.site.function.address] = nil
        order.removeAll { $0 == t.site.function.address }
    }

    /// The main executable and the vDSO cannot be unloaded; every other module is pinned once.
    private func pin(_ module: Module) throws {
        guard pinned[module.path] == nil, module.path != symbols.executable?.path, !module.isVDSO,
              module.elfType == 3 else { return }                       // ET_DYN shared objects
        if let handle = try tracee.pin(library: module.path, symbols: symbols) { pinned[module.path] = handle }
    }

    private func resolve(_ spec: ProgramSpec, kind: ProgramKind, function: FunctionSymbol) throws -> ProgramCode {
        switch spec {
        case .count:
            return .count
        case .user(let library, let symbol):
            if kind != .replace { try loadRuntime() }
            let handle = try load(library)
            guard let address = try tracee.dlsym(handle: handle, name: symbol, symbols: symbols) else {
                throw TrampolineError.programNotFound(library: library, symbol: symbol)
            }
            return .user(library: library, symbol: symbol, address: address)
        case .runtime(let symbol):
            guard kind != .replace else {
                throw TrampolineError.unsupported(kind: kind.rawValue, program: symbol, reason: "hookit's own programs run as fentry, fexit or fmod_ret")
            }
            return .runtime(symbol: symbol, address: try runtimeSymbol(symbol))
        }
    }

    private func load(_ library: String) throws -> UInt64 {
        if let h = libraries[library] { return h }
        let lib = try tracee.inject(library: library, symbols: symbols)
        libraries[library] = lib.handle
        return lib.handle
    }

    /// The address of a symbol of libhookit_rt.so in the tracee (loading it if needed): its
    /// programs, and the variables through which hookit configures them.
    public func runtimeSymbol(_ name: String) throws -> UInt64 {
        if let a = runtimeSymbols[name] { return a }      // dlsym is a remote call: once per name
        try loadRuntime()
        guard let path = options.runtimeLibrary, let handle = libraries[path],
              let address = try tracee.dlsym(handle: handle, name: name, symbols: symbols) else {
            throw TrampolineError.programNotFound(library: options.runtimeLibrary ?? "libhookit_rt.so", symbol: name)
        }
        runtimeSymbols[name] = address
        return address
    }

    private func loadRuntime() throws {
        if runtimeRun != nil { return }
        guard let path = options.runtimeLibrary, access(path, R_OK) == 0 else {
            throw TrampolineError.runtimeMissing(path: options.runtimeLibrary ?? "(not configured)")
        }
        let handle = try load(path)
        runtimeRun = try tracee.dlsym(handle: handle, name: "hookit_rt_run", symbols: symbols)
        if runtimeRun == nil { throw TrampolineError.programNotFound(library: path, symbol: "hookit_rt_run") }
        if options.timePrograms, let flag = try tracee.dlsym(handle: handle, name: "hookit_rt_time_enabled", symbols: symbols) {
            try tracee.memory.write([1, 0, 0, 0], at: flag)
        }
        if let cpus = try tracee.dlsym(handle: handle, name: "hookit_rt_cpus", symbols: symbols) {
            try tracee.memory.write(Array([UInt8].le(UInt64(counters.cpus)).prefix(4)), at: cpus)
        }
    }

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
    private func swapAll(_ built: [(Trampoline, Image?)], stacks: inout StackExtents) throws {
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
            if let o = old { retire(o) }
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
        for i in retired { entries.append((i.address, i.size, "hookit_trampoline_retired_\(i.selector)")) }
        perfMap.write(entries.sorted { $0.start < $1.start })
    }

    private func buildImage(_ t: Trampoline) throws -> Image {
        let counter = ImageBuilder.needsInflight(t.links) ? try counters.allocate(tracee: tracee) : nil
        var input = ImageBuilder.Input(site: t.site, links: t.links, originalEntry: t.originalEntry,
                                       runtimeRun: runtimeRun, inflightCounter: counter, counters: counters, cells: cells)
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
            queueCode(built.code, at: address, size: size)
        } catch {
            code.release(address, size: bound)
            if let c = counter { counters.release(c) }
            throw error
        }
        return Image(address: address, size: size, selector: t.selector + 1, inflightCounter: counter,
                     afterCall: built.afterCallOffset.map { address + UInt64($0) },
                     epilogue: built.epilogueOffset.map { address + UInt64($0) })
    }

    /// Time stamp counter rate, measured once per hookit run.
    public static let tscHz: Double = hk_tsc_hz()

    /// More than any image of `t` can take: frame, register and vector saves, the stack-argument
    /// copy and ~200 bytes per program (a per-CPU count with its rseq section and descriptor).
    static func imageSizeBound(_ t: Trampoline) -> Int { 1536 + 256 * t.programCount }

    // MARK: - retirement (the seed's bpf_tramp_image_put)

    /// An image that no entry reaches any more. Threads may still be inside it, or inside the
    /// original called from it; its after-call site is patched to jump straight to its epilogue
    /// (the seed's ip_after_call -> ip_epilogue), so such a thread skips the fexit programs of a
    /// list that has changed. It is freed by `collectRetired` once quiescent.
    func retire(_ image: Image) {
        if let site = image.afterCall, let epilogue = image.epilogue {
            try? TextPoke.poke(tracee, at: site, expected: PatchSite.nop5, new: EntryPatch.jmp(from: site, to: epilogue),
                               function: "retired image 0x\(String(image.address, radix: 16))")
        }
        retired.append(image)
    }

    /// Frees the retired images no thread can be in any more (PC, in-flight count, stack);
    /// the others wait for a later call. With the world running, each thread is stopped for its
    /// own check only. Returns how many were freed.
    @discardableResult
    public func collectRetired() -> Int {
        var stacks = StackExtents(pid: tracee.pid)
        return collectRetired(stacks: &stacks)
    }

    @discardableResult
    func collectRetired(stacks: inout StackExtents, threads: (pcs: [pid_t: UInt64], sps: [pid_t: UInt64])? = nil) -> Int {
        guard !retired.isEmpty else { return 0 }
        let inflight = retired.compactMap { i in i.inflightCounter.map { (i.range, counters.read($0) ?? 1) } }
        let busy = Set(ImageRetirement.busyRanges(retired.map(\.range), inflight: inflight, tracee: tracee,
                                                  stacks: &stacks, threads: threads))
        let (keep, free) = (retired.filter { busy.contains($0.range) }, retired.filter { !busy.contains($0.range) })
        for image in free { release(image) }
        retired = keep
        return free.count
    }

    /// Images retired and not yet freed.
    public var retiredCount: Int { retired.count }

    /// Queues code for `flushCode`, padded with int3 to its whole allocation so neighbouring
    /// allocations form one contiguous run.
    private func queueCode(_ bytes: [UInt8], at address: UInt64, size: Int) {
        let granule = Int(CodeAllocator.granule)
        let padded = (size + granule - 1) / granule * granule
        pendingCode.append((address, bytes + [UInt8](repeating: 0xCC, count: max(0, padded - bytes.count))))
    }

    /// Writes the queued code, one pwrite per contiguous run (through /proc/PID/mem: the pages
    /// are r-x). Runs before any poke can make the code reachable.
    func flushCode() throws {
        pendingCode.sort { $0.address < $1.address }
        var i = 0
        while i < pendingCode.count {
            var run = pendingCode[i].bytes
            let start = pendingCode[i].address
            var j = i + 1
            while j < pendingCode.count, pendingCode[j].address == start + UInt64(run.count), run.count < 1 << 20 {
                run += pendingCode[j].bytes
                j += 1
            }
            try tracee.memory.writeForced(run, at: start)
            i = j
        }
        pendingCode.removeAll()
    }

    func release(_ image: Image) {
        code.release(image.address, size: image.size)
        if let c = image.inflightCounter { counters.release(c) }
    }

    // MARK: - statistics

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

    // MARK: - detach

    /// Restores every patched entry exactly (unregister), then frees what no thread can still be
    /// in. What a thread may still return into stays mapped and is reported.
    ///
    /// `keeping`: functions whose replace patch stays live after hookit leaves (a live patch):
    /// their image, relocated prologue, code page, unwind information and module references stay;
    /// a later hookit takes such a patch over like any patch of a dead hookit.
    public func detach(waitSeconds: Double = 2, keeping: Set<UInt64> = []) -> TableDetachReport {
        var report = TableDetachReport()
        if tracee.execed {
            // A new program image: none of hookit's addresses mean anything in it any more.
            report.problems.append("the process called execve; its new image has none of hookit's patches")
            return report
        }
        // The world is stopped for the pokes that restore the entries and for each check that
        // no thread can still be in hookit's code; freeing that code afterwards needs no stop
        // (nothing reaches it any more). Called with the world stopped, it stays stopped.
        let stopsHere = !tracee.held
        var stacks = StackExtents(pid: tracee.pid)
        if stopsHere { do { try tracee.stopWorld() } catch { report.problems.append("\(error)"); return report } }
        defer { if stopsHere { try? tracee.resumeWorld() } }
        let kept = keeping.filter { a in trampolines[a].map { $0.image != nil && !($0.links[.replace] ?? []).isEmpty } ?? false }
        let live = order.filter { !kept.contains($0) }.compactMap { a in trampolines[a].flatMap { t in t.image.map { (t, $0) } } }
        // A site someone else changed since is reported and left as it is; the others are restored.
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
            retired.append(image)
            report.restored += 1
        }
        if !report.problems.isEmpty {
            // An entry still patched still reaches its image, its counters and its programs'
            // statistics: nothing may be freed.
            report.problems.append("a patch could not be restored; hookit's pages stay mapped")
            return report
        }
        // A replacement may call the original through its HOOKIT_ORIGINAL pointer at any time,
        // even after detach: point it at the (restored) function itself; a relocated prologue
        // it may already have loaded stays mapped for good.
        var keep: [Range<UInt64>] = []
        for (slot, function, t) in originalSlots where !kept.contains(function) {
            try? tracee.memory.write([UInt8].le(function), at: slot)
            if let b = t.relocatedBlock { keep.append(b) }
        }
        report.leftMapped += keep.map { "0x\(String($0.lowerBound, radix: 16))-0x\(String($0.upperBound, radix: 16)) (the original of a replaced function)" }
        keep += kept.compactMap { trampolines[$0]?.relocatedBlock }
        let ranges = retired.map(\.range) + trampolines.values.compactMap(\.relocatedBlock).filter { !keep.contains($0) }
        let deadline = Clock.seconds() + waitSeconds
        while true {
            // In the stop that restored the entries, then in short stops while threads leave.
            if !tracee.held { do { try tracee.stopWorld() } catch { report.problems.append("\(error)"); return report } }
            let inflight = retired.compactMap { i in i.inflightCounter.map { (i.range, counters.read($0) ?? 1) } }
            let threads = try? TextPoke.threadState(tracee)
            let busy = ImageRetirement.busyRanges(ranges, inflight: inflight, tracee: tracee, stacks: &stacks,
                                                  threads: threads.map { ($0.pcs, $0.sps) })
            if stopsHere { try? tracee.resumeWorld() }
            if busy.isEmpty { break }
            if Clock.seconds() >= deadline {
                // Not a failure: a thread blocked inside a hooked function (read, epoll_wait...)
                // or a frame an exception or longjmp skipped will return through this code. It
                // stays, with the counters and module references it uses, and is reported.
                report.leftMapped += busy.map { "0x\(String($0.lowerBound, radix: 16))-0x\(String($0.upperBound, radix: 16))" }
                return report
            }
            // Let the threads run on a little, so they leave the images.
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
                return report
            }
        }
        for image in retired { release(image) }
        retired.removeAll()
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
        if keep.isEmpty && kept.isEmpty {
            for (_, handle) in pinned { try? tracee.unpin(handle: handle, symbols: symbols) }
            pinned.removeAll()
        }
        report.unmapped = deregistered && keep.isEmpty
        return report
    }

}

public struct TableDetachReport: Sendable {
    public var restored = 0
    /// Replace patches left live on purpose (`keeping`).
    public var kept = 0
    public var unmapped = false
    public var leftMapped: [String] = []
    public var problems: [String] = []
}

extension ProgramCode {
    var spec: ProgramSpec {
        switch self {
        case .count: return .count
        case .user(let lib, let sym, _): return .user(library: lib, symbol: sym)
        case .runtime(let sym, _): return .runtime(symbol: sym)
        }
    }
}

extension ProgramSpec {
    var name: String {
        switch self {
        case .count: return "count"
        case .user(let lib, let sym): return "\(lib):\(sym)"
        case .runtime(let sym): return sym
        }
    }
}

extension Array where Element == UInt8 {
    static func le(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

extension TrampolineTable {
    /// Refuses a program library that does not define `symbol`, before it is loaded.
    static func checkLibraryExports(_ library: String, _ symbol: String, pid: pid_t) throws {
        guard let names = ElfFile.definedSymbols(path: "/proc/\(pid)/root\(library)") else {
            throw TrampolineError.programNotFound(library: library, symbol: symbol + " (the library cannot be read)")
        }
        if !names.contains(symbol) { throw TrampolineError.programNotFound(library: library, symbol: symbol) }
    }
}
