import Injector

extension ImageBuilder {
    /// Replace image for a replacement that may change registers the original leaves alone (an
    /// ordinary C function may change every caller-saved register; see RegisterUse): it calls
    /// the replacement like the original's caller did and gives back `givesBack` as they were
    /// at the call. Everything else comes back as the replacement left it: rax always (the return
    /// value), and rdx, xmm0, xmm1 and st0 exactly when the original writes them itself (then
    /// they may be its return value, and no caller relies on them).
    ///
    ///     save givesBack (+ r11, the copy's scratch; + rax, rdx for the XSAVE) -> XSAVE if
    ///     givesBack holds vector/x87/mask registers -> reload rax, rdx (al, the third argument)
    ///     -> copy the stack arguments -> call the replacement -> keep its rax, rdx, xmm0, xmm1
    ///     in the ctx slots -> XRSTOR (x87 left out when the original may return in st0) -> the
    ///     replacement's return registers back -> reload givesBack -> leave; ret
    ///
    /// No in-flight counter: a thread inside the replacement has a return address into the image
    /// on its stack, which retirement's stack scan sees; and a kept patch (--keep) must not
    /// depend on counters that detach unmaps.
    static func emitReplaceWrapper(_ w: X86Writer, _ target: UInt64, givesBack: RegisterSet) {
        let extended = !givesBack.isDisjoint(with: .extended)
        let saved = (givesBack.union(extended ? [.r11, .rax, .rdx] : [.r11])).gprs
        w.push(.rbp)
        w.mov(.rbp, .rsp)
        w.lea(.rsp, .rsp, -frameSize)
        for r in saved { w.store(r, .rbp, gpr(r)) }
        if extended {
            saveVectorState(w)
            w.load(.rax, .rbp, gpr(.rax))
            w.load(.rdx, .rbp, gpr(.rdx))
        }
        copyStackArguments(w)
        w.callFar(target)
        w.lea(.rsp, .rsp, stackArgumentBytes)
        if extended {
            w.store(.rax, .rbp, ctx(ctxRet))
            w.store(.rdx, .rbp, ctx(ctxRetHi))
            w.storeXmm(0, .rbp, ctx(ctxXmmRet))
            w.storeXmm(1, .rbp, ctx(ctxXmmRet + 16))
            restoreVectorState(w, mask: givesBack.contains(.x87) ? xsaveMask : xsaveMask & ~1)
            if !givesBack.contains(.vector(0)) { w.loadXmm(0, .rbp, ctx(ctxXmmRet)) }
            if !givesBack.contains(.vector(1)) { w.loadXmm(1, .rbp, ctx(ctxXmmRet + 16)) }
            w.load(.rax, .rbp, ctx(ctxRet))
            if !givesBack.contains(.rdx) { w.load(.rdx, .rbp, ctx(ctxRetHi)) }
        }
        for r in givesBack.gprs where r != .rax { w.load(r, .rbp, gpr(r)) }
        w.leave()
        w.ret()
    }
}
