import Injector

/// Where and how a function's entry is patched (the seed's ftrace_managed vs plain text poke).
struct PatchSite {
    enum Style {
        /// A 5-byte nop from -fpatchable-function-entry / -mnop-mcount: poked to `jmp image`;
        /// the original continues right after the nop. (The kernel pokes a `call` for ftrace's
        /// shared trampolines, which need the site from the return address. hookit's image is
        /// per function and knows its site; a `call` whose return address the image drops would
        /// unbalance the CPU's return-stack predictor: measured 8.4 ns per call instead of 1.8.)
        case patchable
        /// An ordinary entry: its first instructions are displaced into `relocated` and the
        /// entry poked to `jmp image`.
        case relocated(RelocatedPrologue, body: [UInt8], trailing: [UInt8])
    }

    let function: FunctionSymbol
    let module: Module
    /// The 5 bytes that are rewritten.
    let address: UInt64
    /// What those bytes hold in the ELF file: what detach puts back.
    let original: [UInt8]
    let style: Style
    /// What those bytes hold now: `original`, or the entry patch of a hookit that was killed,
    /// which the first poke of this session replaces.
    var found: [UInt8]

    static let patchLength = 5
    static let endbr64: [UInt8] = [0xF3, 0x0F, 0x1E, 0xFA]
    /// 4 when `bytes` start with endbr64 (an IBT landing pad the patch goes after), else 0.
    static func landingPadLength(_ bytes: [UInt8]) -> Int { Array(bytes.prefix(4)) == endbr64 ? 4 : 0 }
    static let nop5: [UInt8] = [0x0F, 0x1F, 0x44, 0x00, 0x00]
    static let nop1x5: [UInt8] = [0x90, 0x90, 0x90, 0x90, 0x90]

    var label: String { function.label }

    /// Where the original function continues after the patched bytes, for patchable entries.
    var afterPatch: UInt64 { address + UInt64(Self.patchLength) }

    /// Reads the entry, checks it against the file (a foreign patch is refused, never
    /// overwritten), and decides how to patch it.
    static func analyze(_ f: FunctionSymbol, module: Module, tracee: Tracee) throws -> PatchSite {
        let label = f.label
        if let why = Self.notEnteredByCall(f) { throw TrampolineError.cannotPatch(function: label, reason: why) }
        let window = 32
        var live = try tracee.memory.read(at: f.address, count: window)
        var leftover: (offset: Int, bytes: [UInt8])?
        var fileBody: [UInt8]?
        // Only this function's bytes (and what a patch of it would cover) are compared with the
        // file: the window may reach into the next function, which may be hooked already.
        let own = f.size > 0 ? min(window, max(Int(f.size), landingPadLength(live) + patchLength)) : window
        if let full = module.fileBytes(at: f.address, count: window), full.prefix(own) != live.prefix(own) {
            let file = Array(full.prefix(own)) + live.dropFirst(own)
            let i = zip(file, live).enumerated().first { $0.element.0 != $0.element.1 }!.offset
            guard let site = leftoverPatch(live: live, file: file, address: f.address, tracee: tracee) else {
                throw TrampolineError.foreignPatch(function: label, address: f.address + UInt64(i),
                                                   found: Array(live[i..<min(i + 5, window)]),
                                                   expected: Array(file[i..<min(i + 5, window)]),
                                                   what: describeForeign(live[i]))
            }
            // Analyse the function as the file has it; the first poke replaces the leftover.
            leftover = (site, Array(live[site..<site + patchLength]))
            live = full
            fileBody = f.size > 0 ? module.fileBytes(at: f.address, count: Int(f.size) + 16) : nil
        }
        var site = try analyzeEntry(f, module: module, live: live, fileBody: fileBody, tracee: tracee)
        if site.address / 4096 != (site.address + UInt64(patchLength) - 1) / 4096 {
            // A poke lands whole only within one page (TextPoke); refused here, before any stop,
            // so it never fails a batch.
            throw TrampolineError.cannotPatch(function: label,
                reason: "the 5-byte patch at 0x\(String(site.address, radix: 16)) would cross a page boundary (the entry is not aligned)")
        }
        if let l = leftover {
            guard site.address == f.address + UInt64(l.offset) else {
                throw TrampolineError.cannotPatch(function: label, reason: "a patch left by an earlier hookit is not where this one would patch")
            }
            site.found = l.bytes
        }
        return site
    }

    /// A `jmp rel32` at the entry (after an endbr64) into a code page with hookit's header, and
    /// nothing else different from the file: the patch of a hookit that died. Its offset.
    static func leftoverPatch(live: [UInt8], file: [UInt8], address: UInt64, tracee: Tracee) -> Int? {
        let site = Self.landingPadLength(file)
        guard live[site] == 0xE9,
              zip(live, file).enumerated().allSatisfy({ $0.element.0 == $0.element.1 || ($0.offset >= site && $0.offset < site + patchLength) })
        else { return nil }
        let rel = Int32(bitPattern: UInt32(live[site + 1]) | UInt32(live[site + 2]) << 8 | UInt32(live[site + 3]) << 16 | UInt32(live[site + 4]) << 24)
        let target = address &+ UInt64(site + patchLength) &+ UInt64(bitPattern: Int64(rel))
        guard let page = (try? ProcMaps.read(tracee.pid))?.first(where: { target >= $0.start && target < $0.end && !$0.isFile }),
              (try? tracee.memory.read(at: page.start, count: CodeAllocator.magic.count)) == CodeAllocator.magic
        else { return nil }
        return site
    }

    private static func analyzeEntry(_ f: FunctionSymbol, module: Module, live: [UInt8], fileBody: [UInt8]?,
                                     tracee: Tracee) throws -> PatchSite {
        let label = f.label
        let skip = Self.landingPadLength(live)
        let entry = Array(live[skip..<skip + patchLength])
        if entry == nop5 || entry == nop1x5 {
            return PatchSite(function: f, module: module, address: f.address + UInt64(skip), original: entry,
                             style: .patchable, found: entry)
        }
        guard f.size > 0 else {
            throw TrampolineError.cannotPatch(function: label, reason: "its size is unknown, so its branches cannot be checked")
        }
        let body = try fileBody.map { Array($0.prefix(Int(f.size))) } ?? tracee.memory.read(at: f.address, count: Int(f.size))
        let trailing = fileBody.map { Array($0.dropFirst(Int(f.size))) } ?? (try? tracee.memory.read(at: f.address + f.size, count: 16)) ?? []
        // Relocated once here to learn the layout (and refuse early); the block is relocated again
        // for the address it finally runs at.
        let probe: RelocatedPrologue
        do {
            probe = try Relocator.relocate(function: body, trailing: trailing, address: f.address, destination: f.address)
        } catch {
            throw TrampolineError.cannotPatch(function: label, reason: "\(error)")
        }
        let at = f.address + UInt64(probe.patchOffset)
        if let b = IncomingBranches.into(at..<at + UInt64(probe.displacedLength), of: f.address..<f.address + f.size, module: module) {
            throw TrampolineError.cannotPatch(function: label,
                reason: "code at 0x\(String(b.source, radix: 16)), outside the function, branches to 0x\(String(b.target, radix: 16)), inside the bytes to patch")
        }
        let bytes = Array((body + trailing)[probe.patchOffset..<probe.patchOffset + patchLength])
        return PatchSite(function: f, module: module, address: at, original: bytes,
                         style: .relocated(probe, body: body, trailing: trailing), found: bytes)
    }

    static func describeForeign(_ b: UInt8) -> String {
        switch b {
        case 0xCC: return "an int3 breakpoint: a debugger or a uprobe"
        case 0xE9, 0xEB: return "a jmp: another hooking tool"
        case 0xE8: return "a call: another hooking tool"
        default: return "bytes that differ from the file"
        }
    }
}

extension PatchSite {
    /// Why this symbol, although typed FUNC, is not a function entered by a `call` (so an entry
    /// hook, which assumes a return address on top of the stack, would be wrong there); nil for
    /// ordinary functions. Such symbols appear in full .symtab tables (unstripped programs,
    /// debug files): gcc's `.cold` parts of a hot/cold split function are reached by a jump
    /// from the middle of their function, and glibc's `__restore_rt` is "returned" into by
    /// the kernel when a signal handler ends.
    static func notEnteredByCall(_ f: FunctionSymbol) -> String? {
        if f.name.hasSuffix(".cold") || f.name.contains(".cold.") {
            return "it is the cold part of a split function, entered by a jump from its middle, not by a call"
        }
        if f.name == "__restore_rt" { return "it is the signal-return trampoline, entered by a return, not by a call" }
        return nil
    }
}
