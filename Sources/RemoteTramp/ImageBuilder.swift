import CPtrace
import Injector

/// Lays out one trampoline image, the way arch_prepare_bpf_trampoline does for the kernel.
///
/// Stack at the image's entry is exactly the hooked function's entry: [rsp] = the caller's
/// return address, arguments in rdi..r9 / xmm0-7 / the caller's frame, al = vector count for
/// variadics. Both entry styles reach the image with a `jmp` (see PatchSite).
///
/// What must survive: with GCC's -fipa-ra a caller may keep values in *caller-saved* registers
/// across a call to a function it knows does not touch them. So an image gives back every
/// register as the original function would have left it, on every path:
///
/// - resume (fentry only) and lean images: everything is restored to the entry state before
///   the jump to the original, which then changes what it always changes.
/// - call-original (fexit, fmod_ret returning 0) and the retired image's epilogue jump: after
///   the original returns, its own state is saved (all caller-saved GPRs, and the whole vector
///   and x87 state when a C program that may change it runs), the programs run, and that state
///   comes back whole: rax, rdx, xmm0, xmm1 from the ctx, where the original's values were stored.
/// - skip (fmod_ret non-zero, --override): the entry state comes back, except rax = ctx.ret;
///   ctx.ret_hi and ctx.xmm_ret start as the entry rdx, xmm0, xmm1, so those change only when
///   the program wrote them (a 128-bit, two-word or floating-point return).
/// - replace: the replacement is an ordinary C function and may change any caller-saved
///   register. RegisterUse reads what the replacement may write (an upper bound over its call
///   graph) and what the original's callers may assume it writes (the original's own code and
///   known callees); if the first is within the second, a bare `jmp` is exact, else the image
///   calls the replacement and gives back the difference (emitReplaceWrapper). rax is always
///   the replacement's; rdx, xmm0, xmm1, st0 are whenever the original writes them, which a
///   function returning in them must.
///
/// Flags are not given back (no compiler keeps a value in them across a call); DF is never set.
///
///     rbp + 16 ...   stack arguments of the call (copied below before calling the original: as
///                    many bytes as StackArguments finds the original may read, most often none)
///     rbp + 8        caller's return address        <- ctx.entry_sp
///     rbp            saved rbp
///     rbp - 272      struct hookit_ctx (272 bytes)
///     rbp - 288      --if: which filters passed this call (a bit each), the TSC at entry (`ns`)
///     rbp - 368      saved rax rcx rdx rsi rdi r8 r9 r10 r11 (entry values, later the original's),
///                    8 bytes of padding: rsp stays 16-byte aligned
///     below          64-byte aligned XSAVE area (C programs that may change it)  <- rsp, 16-byte aligned
///
/// Lean image (only built-in counts on fentry): save rax, r11 -> counts -> restore -> jmp original.
/// Call-original image (fexit or fmod_ret present; the seed's BPF_TRAMP_F_CALL_ORIG):
///   save -> in-flight++ -> fentry -> fmod_ret (non-zero: skip) -> restore the entry state, copy
///   the stack arguments, call original -> save the original's state -> [ip_after_call: a 5-byte
///   nop] -> fexit -> [ip_epilogue] in-flight-- -> restore that state, return values from ctx ->
///   leave; ret.
/// Resume image (fentry only; the seed's BPF_TRAMP_F_RESTORE_REGS): save -> in-flight++ ->
///   fentry -> in-flight-- -> restore everything -> leave -> jmp to the original, which then
///   runs as if never interrupted.
struct ImageBuilder {
    struct Input {
        var site: PatchSite
        var links: [ProgramKind: [Link]]
        /// Where the original function can be called: after the nop, or the relocated block.
        var originalEntry: UInt64
        /// hookit_rt_run in the tracee, needed when any link is a user program.
        var runtimeRun: UInt64?
        /// The image's in-flight counter; nil for a lean or replace image.
        var inflightCounter: Int?
        /// In-flight counters live here...
        var counters: PerCPUCounters
        /// ...built-in count links' counters here.
        var cells: PerCPUCounters
        /// Bytes of the caller's frame the original may read as stack arguments (StackArguments):
        /// what a call-original image copies.
        var stackArgumentBytes: Int32 = ImageBuilder.stackArgumentBytes
    }

    struct Built {
        var code: [UInt8]
        var afterCallOffset: Int?
        var epilogueOffset: Int?
    }

    static let ctxBase: Int32 = -272
    static let filterVerdicts: Int32 = -288, filterEntryTicks: Int32 = -280
    static let gprBase: Int32 = -368
    static let frameSize: Int32 = 368
    /// Saved in this order at gprBase; rax first so it can be reloaded last.
    static let savedRegs: [Reg] = [.rax, .rcx, .rdx, .rsi, .rdi, .r8, .r9, .r10, .r11]
    /// Bytes of the caller's frame copied as stack arguments for the original: 8 integer
    /// arguments, a variadic call with 12, or a by-value struct of up to ~200 bytes fit.
    static let stackArgumentBytes: Int32 = 256

    // struct hookit_ctx offsets (include/hookit.h)
    static let ctxRet: Int32 = 48, ctxFuncIP: Int32 = 56, ctxCookie: Int32 = 64, ctxRetHi: Int32 = 72
    static let ctxEntrySP: Int32 = 80, ctxNvec: Int32 = 88, ctxXmmArgs: Int32 = 96, ctxXmmRet: Int32 = 224
    static let ctxScratch: Int32 = 256
    static let argRegs: [Reg] = [.rdi, .rsi, .rdx, .rcx, .r8, .r9]

    /// XSAVE components: everything the OS enabled except AMX tiles (bits 17, 18), which hookit
    /// never touches and which would fault (#NM) in a process that never asked for them.
    static let xsaveMask: UInt64 = hk_xcr0() & ~(UInt64(3) << 17)
    static let xsaveArea: Int32 = (Int32(hk_xsave_size()) + 63) & ~63
    static let compacted = hk_has_xsavec() != 0

    static func ctx(_ off: Int32) -> Int32 { ctxBase + off }
    static func gpr(_ r: Reg) -> Int32 { gprBase + Int32(savedRegs.firstIndex(of: r)! * 8) }

    static func callsOriginal(_ links: [ProgramKind: [Link]]) -> Bool {
        !(links[.fexit] ?? []).isEmpty || !(links[.fmodRet] ?? []).isEmpty
    }

    /// Only built-in counts, all fentry: no frame, no argument saved. The count clobbers rax and
    /// r11 (both saved) and the flags (call-clobbered for every caller; DF is never touched).
    static func isLean(_ links: [ProgramKind: [Link]]) -> Bool {
        let all = links.values.flatMap { $0 }
        return !all.isEmpty && all.allSatisfy { $0.kind == .fentry && $0.code == .count }
    }

    /// Whether an image of these links needs an in-flight counter.
    static func needsInflight(_ links: [ProgramKind: [Link]]) -> Bool {
        !isLean(links) && (links[.replace] ?? []).isEmpty
    }

    /// Programs that are called (all but the built-in count) need the ctx filled in.
    static func callsPrograms(_ links: [ProgramKind: [Link]]) -> Bool {
        links.values.contains { $0.contains { $0.code != .count } }
    }

    /// Whether any link runs a user's C program (which may read every field of the ctx).
    static func runsUserPrograms(_ links: [ProgramKind: [Link]]) -> Bool {
        links.values.contains { $0.contains { if case .user = $0.code { return true } else { return false } } }
    }

    /// User C programs may use any vector register (and x87), unless their code proves they
    /// cannot (Link.changesVectorState); hookit's runtime programs and the built-in count use
    /// none. Images with only those skip the XSAVE.
    static func savesVectorState(_ links: [ProgramKind: [Link]]) -> Bool {
        links.values.contains { $0.contains { $0.changesVectorState } }
    }

    static func build(_ input: Input, at address: UInt64) throws -> Built {
        var sections: [PerCPUCounters.CriticalSection] = []
        let w = X86Writer(base: address)
        var offsets: (afterCall: Int?, epilogue: Int?) = (nil, nil)
        if let replacement = input.links[.replace]?.first, case .user(_, _, let target) = replacement.code {
            if replacement.givesBack.isEmpty { w.jmpFar(target) }
            else { emitReplaceWrapper(w, target, givesBack: replacement.givesBack) }
        } else if isLean(input.links) {
            try emitLean(w, input, &sections)
        } else {
            let filters = FilterGuards(input.links)
            try emitEntry(w, input, filters, &sections)
            if callsOriginal(input.links) { offsets = try emitCallOriginal(w, input, filters, &sections) }
            else { emitResume(w, input, &sections) }
        }
        PerCPUCounters.emitDescriptors(w, sections)
        return Built(code: try w.finish(), afterCallOffset: offsets.afterCall, epilogueOffset: offsets.epilogue)
    }

    private static func emitLean(_ w: X86Writer, _ input: Input, _ sections: inout [PerCPUCounters.CriticalSection]) throws {
        w.push(.rax)
        w.push(.r11)
        for link in input.links[.fentry] ?? [] { try emitRun(w, link, input, &sections) }
        w.pop(.r11)
        w.pop(.rax)
        w.jmpFar(input.originalEntry)
    }

    /// Frame, registers, ctx, vector state, in-flight++, the fentry programs.
    private static func emitEntry(_ w: X86Writer, _ input: Input, _ filters: FilterGuards,
                                  _ sections: inout [PerCPUCounters.CriticalSection]) throws {
        w.push(.rbp)
        w.mov(.rbp, .rsp)
        w.lea(.rsp, .rsp, -frameSize)
        saveRegisters(w)
        if callsPrograms(input.links) { fillContext(w, input) }   // before XSAVE, which clobbers rax and rdx
        filters.emitStart(w)
        if savesVectorState(input.links) { saveVectorState(w) }
        if let counter = input.inflightCounter { input.counters.emitIncrement(w, counter, sections: &sections) }
        for link in input.links[.fentry] ?? [] { try filters.guarded(w, link) { try emitRun(w, link, input, &sections) } }
    }

    /// fentry only: everything back as at the entry, then on to the original.
    private static func emitResume(_ w: X86Writer, _ input: Input, _ sections: inout [PerCPUCounters.CriticalSection]) {
        if let counter = input.inflightCounter { input.counters.emitIncrement(w, counter, by: -1, sections: &sections) }
        if savesVectorState(input.links) { restoreVectorState(w) }
        restoreRegisters(w)
        w.leave()
        w.jmpFar(input.originalEntry)
    }

    /// fmod_ret programs (non-zero: skip), the original called, fexit programs, return.
    /// Returns the offsets of ip_after_call and ip_epilogue.
    private static func emitCallOriginal(_ w: X86Writer, _ input: Input, _ filters: FilterGuards,
                                         _ sections: inout [PerCPUCounters.CriticalSection]) throws -> (Int?, Int?) {
        let vectors = savesVectorState(input.links)
        let skipOriginal = w.newLabel(), runFexit = w.newLabel()
        for link in input.links[.fmodRet] ?? [] {
            try filters.guarded(w, link) { try emitRun(w, link, input, &sections) }
            w.test(.rax, .rax)
            w.jcc(.ne, skipOriginal)
        }
        // The original runs in the entry state, and sees its stack arguments at its own rsp+8,
        // as from its real caller.
        if vectors { restoreVectorState(w) }
        copyStackArguments(w, input.stackArgumentBytes)    // r11 is reloaded below
        restoreRegisters(w)
        w.callFar(input.originalEntry)
        if input.stackArgumentBytes > 0 { w.lea(.rsp, .rsp, input.stackArgumentBytes) }
        saveRegisters(w)                               // now the original's state (ctx.ret: rax)
        w.store(.rax, .rbp, ctx(ctxRet))
        w.store(.rdx, .rbp, ctx(ctxRetHi))
        w.storeXmm(0, .rbp, ctx(ctxXmmRet))
        w.storeXmm(1, .rbp, ctx(ctxXmmRet + 16))
        if vectors { saveVectorState(w) }              // clobbers rax and rdx: after the stores
        // ip_after_call: once this image is retired, this nop becomes `jmp epilogue`, so a
        // thread that comes back from the original late skips programs that are gone.
        let afterCall = w.offset
        w.raw(PatchSite.nop5)
        w.jmp(runFexit)
        w.bind(skipOriginal)                           // the entry state stays saved
        w.bind(runFexit)
        for link in input.links[.fexit] ?? [] { try filters.guarded(w, link) { try emitRun(w, link, input, &sections) } }
        let epilogue = w.offset
        if let counter = input.inflightCounter { input.counters.emitIncrement(w, counter, by: -1, sections: &sections) }
        if vectors { restoreVectorState(w) }
        restoreRegisters(w)
        w.load(.rax, .rbp, ctx(ctxRet))
        w.load(.rdx, .rbp, ctx(ctxRetHi))
        w.loadXmm(0, .rbp, ctx(ctxXmmRet))
        w.loadXmm(1, .rbp, ctx(ctxXmmRet + 16))
        w.leave()
        w.ret()
        return (afterCall, epilogue)
    }

    /// The caller's stack arguments, `bytes` of them (a multiple of 16: rsp stays aligned),
    /// copied below rsp so a function called from the image finds them at its own rsp+8 as from
    /// its real caller. Clobbers r11.
    static func copyStackArguments(_ w: X86Writer, _ bytes: Int32 = stackArgumentBytes) {
        guard bytes > 0 else { return }
        w.lea(.rsp, .rsp, -bytes)
        for off in stride(from: Int32(0), to: bytes, by: 8) {
            w.load(.r11, .rbp, 16 + off)
            w.store(.r11, .rsp, off)
        }
    }

    private static func saveRegisters(_ w: X86Writer) {
        for r in savedRegs { w.store(r, .rbp, gpr(r)) }
    }

    /// Reloads every saved register, rax last (the others' loads do not need it).
    private static func restoreRegisters(_ w: X86Writer) {
        for r in savedRegs.reversed() { w.load(r, .rbp, gpr(r)) }
    }

    /// XSAVE into a 64-byte aligned area below the frame; rsp points at it afterwards and stays
    /// 16-byte aligned for program calls. Clobbers rax and rdx (saved already).
    static func saveVectorState(_ w: X86Writer) {
        w.lea(.rsp, .rbp, -frameSize)
        w.alignRSP(-64)
        w.lea(.rsp, .rsp, -xsaveArea)
        // XRSTOR wants the header's reserved bytes (512+16 .. 512+63) zero; neither XSAVE nor
        // XSAVEC writes them, and this is fresh stack.
        for off in stride(from: Int32(512 + 16), to: 576, by: 8) { w.storeImm(0, .rsp, off) }
        w.mov(.rax, imm: xsaveMask & 0xFFFF_FFFF)
        w.mov(.rdx, imm: xsaveMask >> 32)
        w.xsave(compacted: compacted)
    }

    /// XRSTOR from the area at rsp, of the components in `mask` (the others stay as they are).
    /// Clobbers rax and rdx (restored after from the GPR area).
    static func restoreVectorState(_ w: X86Writer, mask: UInt64 = xsaveMask) {
        w.mov(.rax, imm: mask & 0xFFFF_FFFF)
        w.mov(.rdx, imm: mask >> 32)
        w.xrstor()
    }

    /// The ctx: argument registers, al (variadic vector count), xmm0-7 (for user programs), the
    /// entry stack pointer, the function's address, zeroed return values.
    private static func fillContext(_ w: X86Writer, _ input: Input) {
        for (i, r) in argRegs.enumerated() { w.store(r, .rbp, ctx(Int32(i * 8))) }
        w.load(.rax, .rbp, gpr(.rax))
        w.store(.rax, .rbp, ctx(ctxNvec))
        // hookit's runtime programs read no floating-point argument: only user programs get them.
        if runsUserPrograms(input.links) {
            for x in 0..<8 { w.storeXmm(UInt8(x), .rbp, ctx(ctxXmmArgs + Int32(x * 16))) }
        }
        w.lea(.rax, .rbp, 8)
        w.store(.rax, .rbp, ctx(ctxEntrySP))
        w.mov(.rax, imm: input.site.function.address)
        w.store(.rax, .rbp, ctx(ctxFuncIP))
        // ret_hi and xmm_ret start as the caller's rdx, xmm0, xmm1: a skipping program that leaves
        // them alone leaves those registers alone (a -fipa-ra caller may keep values there).
        w.store(.rdx, .rbp, ctx(ctxRetHi))
        w.storeXmm(0, .rbp, ctx(ctxXmmRet))
        w.storeXmm(1, .rbp, ctx(ctxXmmRet + 16))
        for off in [ctxRet, ctxScratch, ctxScratch + 8] { w.storeImm(0, .rbp, ctx(off)) }
    }

    /// One program run. `count` is a per-CPU increment and needs nothing in the tracee; a user
    /// program goes through hookit_rt_run (recursion guard, errno, statistics), with its cookie
    /// in ctx; hookit's runtime programs call no libc function and are called directly.
    /// For fmod_ret, rax is the program's verdict afterwards (a count is never one).
    private static func emitRun(_ w: X86Writer, _ link: Link, _ input: Input,
                                _ sections: inout [PerCPUCounters.CriticalSection]) throws {
        switch link.code {
        case .count:
            input.cells.emitIncrement(w, link.counter!, sections: &sections)
        case .user(_, _, let address):
            w.mov(.rax, imm: link.cookie)
            w.store(.rax, .rbp, ctx(ctxCookie))
            w.mov(.rdi, imm: address)
            w.lea(.rsi, .rbp, ctx(0))
            w.mov(.rdx, imm: link.statsAddress!)
            w.callFar(input.runtimeRun!)
        case .runtime(_, let address):
            w.mov(.rax, imm: link.cookie)
            w.store(.rax, .rbp, ctx(ctxCookie))
            w.lea(.rdi, .rbp, ctx(0))
            w.callFar(address)
        }
    }
}
