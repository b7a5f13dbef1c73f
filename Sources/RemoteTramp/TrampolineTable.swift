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
    var trampolines: [UInt64: Trampoline] = [:]
    var order: [UInt64] = []
    public private(set) var links: [Int: Link] = [:]
    private var nextLinkID = 1
    let programs: ProgramLoader
    let stackArguments = StackArgumentCache()
    let retirement = ImageRetirement()
    let batch = CodeBatch()
    let perfMap: PerfMap
    let pins = ModulePins()
    /// The loader patch that reports libraries loaded later (see LoaderWatch).
    public internal(set) var loaderWatch: LoaderWatch?
    /// Entries analysed before the world was stopped (`prepare`).
    private var prepared: [UInt64: PatchSite] = [:]
    /// HOOKIT_ORIGINAL variables handed out, with the function they call.
    var originalSlots: [(slot: UInt64, function: UInt64, trampoline: Trampoline)] = []

    public init(tracee: Tracee, symbols: SymbolTable, options: Options = Options()) {
        self.tracee = tracee
        self.symbols = symbols
        self.options = options
        self.code = CodeAllocator(budget: options.memoryBudget)
        self.perfMap = PerfMap(pid: tracee.pid)
        let cpuID = PerCPUCounters.rseqCPUIDOffset(symbols: symbols, memory: tracee.memory)
        self.counters = PerCPUCounters(cpus: PerCPUCounters.possibleCPUs(), cpuIDOffset: cpuID, sharedWithHookit: false)
        self.cells = PerCPUCounters(cpus: PerCPUCounters.possibleCPUs(), cpuIDOffset: cpuID, sharedWithHookit: true)
        self.programs = ProgramLoader(tracee: tracee, runtimeLibrary: options.runtimeLibrary,
                                      timePrograms: options.timePrograms, cpus: counters.cpus)
    }

    /// The address of a symbol of libhookit_rt.so in the tracee (loading it if needed).
    public func runtimeSymbol(_ name: String) throws -> UInt64 { try programs.runtimeSymbol(name, symbols: symbols) }

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
    /// `filter`: the program runs only for the calls it passes (--if; not for a replacement).
    public func link(_ kind: ProgramKind, _ spec: ProgramSpec, to function: FunctionSymbol, cookie: UInt64 = 0,
                     raw: Bool = false, filter: CallFilter? = nil) throws -> Link {
        let label = function.label
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
        if let filter { try checkCanFilter(kind, spec, filter, trampoline, label) }
        if case .user(let library, let symbol) = spec, !programs.isLoaded(library) {
            try ProgramLoader.checkLibraryExports(library, symbol, pid: tracee.pid)
        }
        let program = try programs.resolve(spec, kind: kind, symbols: symbols)
        // The replacement's HOOKIT_ORIGINAL(name) variable, through which it calls the original.
        var originalSlot: UInt64?
        if kind == .replace, case .user(let lib, _, _) = program {
            originalSlot = try programs.symbol("hookit_original_\(function.name)", in: lib, symbols: symbols)
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
        link.filter = filter
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

    /// A filter guards hookit's own and the user's programs, not a replacement (no image runs
    /// around it) nor the built-in count (whose image has no context to test); an fmod_ret
    /// decides before the call, so its filter cannot test what only the exit knows.
    private func checkCanFilter(_ kind: ProgramKind, _ spec: ProgramSpec, _ filter: CallFilter, _ t: Trampoline, _ label: String) throws {
        if kind == .replace || spec == .count {
            throw TrampolineError.filterUnsupported(function: label, reason: "--if guards fentry, fexit and fmod_ret programs, not \(kind == .replace ? "a replacement" : "the built-in count")")
        }
        if kind == .fmodRet && filter.decidedAtExit {
            throw TrampolineError.filterUnsupported(function: label, reason: "it decides before the call whether to skip it, so it cannot test ret or ns")
        }
        let filters = Set(t.links.values.joined().compactMap { $0.filter.map(ObjectIdentifier.init) })
        if !filters.contains(ObjectIdentifier(filter)) && filters.count >= ImageBuilder.maxFilters {
            throw TrampolineError.tooManyFilters(function: label, limit: ImageBuilder.maxFilters)
        }
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
            throw TrampolineError.cannotPatch(function: f.label, reason: "its module is not mapped")
        }
        let site = try prepared.removeValue(forKey: f.address) ?? PatchSite.analyze(f, module: module, tracee: tracee)
        try pins.pin(module, tracee: tracee, symbols: symbols)
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
            batch.queue(final.code, at: block, size: size)
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
            batch.drop(at: b.lowerBound)
            code.release(b.lowerBound, size: b.count)
        }
        trampolines[t.site.function.address] = nil
        order.removeAll { $0 == t.site.function.address }
    }


    /// Time stamp counter rate, measured once per hookit run.
    public static let tscHz: Double = hk_tsc_hz()

    /// More than any image of `t` can take: frame, register and vector saves, the stack-argument
    /// copy and ~200 bytes per program (a per-CPU count with its rseq section and descriptor).
    static func imageSizeBound(_ t: Trampoline) -> Int { 1536 + 256 * t.programCount }

    // MARK: - retirement (the seed's bpf_tramp_image_put)

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
        let free = retirement.collect(tracee: tracee, counters: counters, stacks: &stacks, threads: threads)
        for image in free { release(image) }
        return free.count
    }

    /// Images retired and not yet freed.
    public var retiredCount: Int { retirement.images.count }

    func flushCode() throws { try batch.flush(to: tracee.memory) }

    func release(_ image: Image) {
        code.release(image.address, size: image.size)
        if let c = image.inflightCounter { counters.release(c) }
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


