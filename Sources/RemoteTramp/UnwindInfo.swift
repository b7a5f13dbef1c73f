import Injector

/// DWARF call-frame information for hookit's code pages, registered with the tracee's unwinder
/// (libgcc's __register_frame) so that a C++ exception, a backtrace() or pthread_cancel can
/// unwind through a trampoline frame instead of terminating the process.
///
/// Every return address the unwinder can meet inside an image follows the image's frame setup
/// (`push rbp; mov rbp, rsp`): CFA = rbp + 16, rbp saved at CFA - 16, the return address at
/// CFA - 8 — one rule for the whole page. No return address ever points into a relocated
/// prologue (a displaced `call` is rewritten to return into the original function), so its pages
/// only need the function-entry rule, CFA = rsp + 8, which is the CIE's initial rule and right at
/// the block's first instruction.
enum UnwindInfo {
    /// .eh_frame bytes (CIE, one FDE for the page, terminator) with absolute pointers.
    static func ehFrame(page: Range<UInt64>, kind: CodeAllocator.Kind) -> [UInt8] {
        var cie: [UInt8] = []
        cie += u32(0)                       // CIE id
        cie += [1]                          // version
        cie += Array("zR".utf8) + [0]       // augmentation
        cie += [1]                          // code alignment factor
        cie += [0x78]                       // data alignment factor: -8 (sleb128)
        cie += [16]                         // return address column: rip
        cie += [1, 0x00]                    // augmentation data: FDE pointers are DW_EH_PE_absptr
        cie += [0x0C, 7, 8]                 // DW_CFA_def_cfa: rsp + 8
        cie += [0x80 | 16, 1]               // DW_CFA_offset: rip at CFA - 8
        let cieRecord = padded(cie)

        var fde: [UInt8] = []
        fde += u32(UInt32(4 + cieRecord.count))   // CIE pointer: back to the CIE's start
        fde += u64(page.lowerBound)
        fde += u64(UInt64(page.count))
        fde += [0]                                // augmentation data length
        if kind == .image {
            fde += [0x0C, 6, 16]                  // DW_CFA_def_cfa: rbp + 16
            fde += [0x80 | 6, 2]                  // DW_CFA_offset: rbp at CFA - 16
        }
        return cieRecord + padded(fde) + u32(0)
    }

    /// length-prefixed, padded with DW_CFA_nop so the next record is 8-byte aligned.
    private static func padded(_ body: [UInt8]) -> [UInt8] {
        var b = body
        while (b.count + 4) % 8 != 0 { b.append(0) }
        return u32(UInt32(b.count)) + b
    }

    private static func u32(_ v: UInt32) -> [UInt8] { .le(v) }
    private static func u64(_ v: UInt64) -> [UInt8] { .le(v) }
}

extension TrampolineTable {
    /// Registers the unwind information of every new page, when the tracee has an unwinder to
    /// register with (C++ programs load libgcc_s). Runs before the pokes that make the pages
    /// reachable, so no thread can ever unwind through an unregistered trampoline frame.
    func registerUnwindInfo() throws {
        guard let register = unwinderFunction("__register_frame") else { return }
        for i in code.unregisteredPages {
            let page = code.pages[i]
            let blob = try data.store(UnwindInfo.ehFrame(page: page.range, kind: page.kind), tracee: tracee)
            _ = try tracee.call(register.address, [blob], name: "__register_frame")
            code.setUnwindInfo(blob, forPage: i)
        }
    }

    /// The reverse, for a page about to be unmapped. False when the unwinder may still hold it.
    func deregisterUnwindInfo(_ page: CodeAllocator.Page) -> Bool {
        guard let blob = page.unwindInfo else { return true }
        guard let deregister = unwinderFunction("__deregister_frame") else { return false }
        return (try? tracee.call(deregister.address, [blob], name: "__deregister_frame")) != nil
    }

    func unwinderFunction(_ name: String) -> FunctionSymbol? {
        for m in symbols.modules where m.name.hasPrefix("libgcc_s") {
            if let f = symbols.functions(in: m).first(where: { $0.name == name }) { return f }
        }
        return nil
    }
}
