import Injector

/// Lays out one trampoline image, the way arch_prepare_bpf_trampoline does for the kernel.
///
/// Stack at the image's entry is exactly the hooked function's entry: [rsp] = the caller's
/// return address, arguments in rdi..r9 / xmm0-7 / the caller's frame, al = vector count for
/// variadics. (A patchable site is reached by `call`, whose extra return address is dropped
/// first with `lea rsp, [rsp+8]` — lea, so the flags stay as they were.)
///
///     rbp + 16 ...         stack arguments of the call (copied below before calling the original)
///     rbp + 8              caller's return address        <- ctx.entry_sp
///     rbp                  saved rbp
///     rbp - 272            struct hookit_ctx (256 bytes)  <- rsp; 16-byte aligned at every call
///     rbp - 16             saved r10 (static chain)
///
/// Lean image (only built-in counts on fentry): push rax -> counts -> pop rax -> jmp original.
/// Call-original image (fexit or fmod_ret present; the seed's BPF_TRAMP_F_CALL_ORIG):
///   save args -> in-flight++ -> fentry -> fmod_ret (non-zero: skip) -> restore args, copy the
///   stack arguments, call original -> [ip_after_call] save rax/rdx/xmm0/xmm1 -> fexit ->
///   [ip_epilogue] in-flight-- -> return values restored -> leave; ret (to the caller).
/// Resume image (fentry only; the seed's BPF_TRAMP_F_RESTORE_REGS): save -> in-flight++ ->
///   fentry -> in-flight-- -> restore every register -> leave -> jmp to the original, which then
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
        var counters: PerCPUCounters
    }

    struct Built {
        var code: [UInt8]
        var afterCallOffset: Int?
        var epilogueOffset: Int?
    }

    static let ctxSize: Int32 = 256
    static let frameSize: Int32 = 272
    /// Bytes of the caller's frame copied as stack arguments for the original: 8 integer
    /// arguments, a variadic call with 12, or a by-value struct of up to ~200 bytes fit.
    static let stackArgumentBytes: Int32 = 256

    // struct hookit_ctx offsets (include/hookit.h)
    static let ctxRet: Int32 = 48, ctxFuncIP: Int32 = 56, ctxCookie: Int32 = 64, ctxRetHi: Int32 = 72
    static let ctxEntrySP: Int32 = 80, ctxNvec: Int32 = 88, ctxXmmArgs: Int32 = 96, ctxXmmRet: Int32 = 224
    static let argRegs: [Reg] = [.rdi, .rsi, .rdx, .rcx, .r8, .r9]

    /// An offset of the ctx from rbp.
    static func ctx(_ off: Int32) -> Int32 { -frameSize + off }

    static func callsOriginal(_ links: [ProgramKind: [Link]]) -> Bool {
        !(links[.fexit] ?? []).isEmpty || !(links[.fmodRet] ?? []).isEmpty
    }

    /// Only built-in counts, all fentry: the image needs no frame and saves no argument: the
    /// count clobbers only rax (saved), r11 (scratch at any function entry) and the flags
    /// (meaningless at function entry, and DF is never touched).
    static func isLean(_ links: [ProgramKind: [Link]]) -> Bool {
        let all = links.values.flatMap { $0 }
        return !all.isEmpty && all.allSatisfy { $0.kind == .fentry && $0.code == .count }
    }

    /// Whether an image of these links needs an in-flight counter.
    static func needsInflight(_ links: [ProgramKind: [Link]]) -> Bool {
        !isLean(links) && (links[.replace] ?? []).isEmpty
    }

    static func build(_ input: Input, at address: UInt64) throws -> Built {
        let w = X86Writer(base: address)
        if case .patchable = input.site.style { w.lea(.rsp, .rsp, 8) }
        if let replacement = input.links[.replace]?.first, case .user(_, _, let target) = replacement.code {
            w.jmpFar(target)
            return Built(code: try w.finish(), afterCallOffset: nil, epilogueOffset: nil)
        }
        if isLean(input.links) {
            w.push(.rax)
            for link in input.links[.fentry] ?? [] { try emitRun(w, link, input) }
            w.pop(.rax)
            w.jmpFar(input.originalEntry)
            return Built(code: try w.finish(), afterCallOffset: nil, epilogueOffset: nil)
        }
        let callOriginal = callsOriginal(input.links)
        w.push(.rbp)
        w.mov(.rbp, .rsp)
        w.lea(.rsp, .rsp, -frameSize)
        saveArguments(w, input)
        if let counter = input.inflightCounter { input.counters.emitIncrement(w, counter) }
        for link in input.links[.fentry] ?? [] { try emitRun(w, link, input) }

        if !callOriginal {
            if let counter = input.inflightCounter { input.counters.emitIncrement(w, counter, by: -1) }
            restoreArguments(w)
            w.leave()
            w.jmpFar(input.originalEntry)
            return Built(code: try w.finish(), afterCallOffset: nil, epilogueOffset: nil)
        }

        let skipOriginal = w.newLabel(), runFexit = w.newLabel()
        for link in input.links[.fmodRet] ?? [] {
            try emitRun(w, link, input)
            w.test(.rax, .rax)
            w.jcc(.ne, skipOriginal)
        }
        // The original sees its stack arguments at its own rsp+8, as from its real caller.
        w.lea(.rsp, .rsp, -stackArgumentBytes)
        w.lea(.rsi, .rbp, 16)
        w.mov(.rdi, .rsp)
        w.mov(.rcx, imm: UInt64(stackArgumentBytes / 8))
        w.repMovsq()
        restoreArguments(w)
        w.callFar(input.originalEntry)
        let afterCall = w.offset
        w.lea(.rsp, .rsp, stackArgumentBytes)
        w.store(.rax, .rbp, ctx(ctxRet))
        w.store(.rdx, .rbp, ctx(ctxRetHi))
        w.storeXmm(0, .rbp, ctx(ctxXmmRet))
        w.storeXmm(1, .rbp, ctx(ctxXmmRet + 16))
        w.jmp(runFexit)
        w.bind(skipOriginal)
        w.bind(runFexit)
        for link in input.links[.fexit] ?? [] { try emitRun(w, link, input) }
        let epilogue = w.offset
        if let counter = input.inflightCounter { input.counters.emitIncrement(w, counter, by: -1) }
        w.load(.rax, .rbp, ctx(ctxRet))
        w.load(.rdx, .rbp, ctx(ctxRetHi))
        w.loadXmm(0, .rbp, ctx(ctxXmmRet))
        w.loadXmm(1, .rbp, ctx(ctxXmmRet + 16))
        w.leave()
        w.ret()
        return Built(code: try w.finish(), afterCallOffset: afterCall, epilogueOffset: epilogue)
    }

    /// Fills the ctx: argument registers, rax (al: variadic vector count), r10, xmm0-7, the
    /// entry stack pointer, the function's address, zeroed return values.
    private static func saveArguments(_ w: X86Writer, _ input: Input) {
        for (i, r) in argRegs.enumerated() { w.store(r, .rbp, ctx(Int32(i * 8))) }
        w.store(.rax, .rbp, ctx(ctxNvec))
        w.store(.r10, .rbp, -16)
        for x in 0..<8 { w.storeXmm(UInt8(x), .rbp, ctx(ctxXmmArgs + Int32(x * 16))) }
        w.lea(.rax, .rbp, 8)
        w.store(.rax, .rbp, ctx(ctxEntrySP))
        w.mov(.rax, imm: input.site.function.address)
        w.store(.rax, .rbp, ctx(ctxFuncIP))
        for off in [ctxRet, ctxRetHi, ctxXmmRet, ctxXmmRet + 8, ctxXmmRet + 16, ctxXmmRet + 24] {
            w.storeImm(0, .rbp, ctx(off))
        }
    }

    private static func restoreArguments(_ w: X86Writer) {
        for (i, r) in argRegs.enumerated() { w.load(r, .rbp, ctx(Int32(i * 8))) }
        w.load(.r10, .rbp, -16)
        for x in 0..<8 { w.loadXmm(UInt8(x), .rbp, ctx(ctxXmmArgs + Int32(x * 16))) }
        w.load(.rax, .rbp, ctx(ctxNvec))
    }

    /// One program run. `count` is two instructions and needs nothing in the tracee; a user
    /// program goes through hookit_rt_run (recursion guard, statistics), with its cookie in ctx.
    private static func emitRun(_ w: X86Writer, _ link: Link, _ input: Input) throws {
        switch link.code {
        case .count:
            input.counters.emitIncrement(w, link.counter!)
        case .user(_, _, let address):
            w.mov(.rax, imm: link.cookie)
            w.store(.rax, .rbp, ctx(ctxCookie))
            w.mov(.rdi, imm: address)
            w.lea(.rsi, .rbp, ctx(0))
            w.mov(.rdx, imm: link.statsAddress!)
            w.callFar(input.runtimeRun!)
        }
    }
}
