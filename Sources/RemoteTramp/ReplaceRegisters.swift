import Injector

extension TrampolineTable {
    /// Whether a user program at `address` may change vector, x87 or mask state.
    func programChangesVectorState(_ address: UInt64) throws -> Bool {
        !(try writtenAtMost(byProgramAt: address)).isDisjoint(with: .extended)
    }

    /// What a function of a loaded library (a program, a replacement) may write: its code and
    /// its library's call graph, read as an upper bound (a call through the PLT or a pointer may
    /// change everything); every call-clobbered register when it cannot be read. `pointers`: see
    /// RegisterUse.written.
    func writtenAtMost(byProgramAt address: UInt64, pointers: [UInt64: RegisterSet] = [:]) throws -> RegisterSet {
        guard let module = try Modules.module(containing: address, pid: tracee.pid, memory: tracee.memory) else { return .callClobbered }
        let functions = symbols.functions(in: module)
        guard let own = functions.first(where: { $0.address == address && $0.size > 0 }) else { return .callClobbered }
        return RegisterUse.written(by: own.address..<own.address + own.size, in: module, functions: functions, bound: .atMost,
                                   pointers: pointers, readPointer: { [tracee] in try? tracee.memory.readU64(at: $0) })
    }

    /// The registers a replace image must give back (see ImageBuilder's replace wrapper): those
    /// the replacement may change — its code and its library's call graph, read as an upper
    /// bound — that the original's callers may rely on — all but what the original and its
    /// known callees write. rax is the return value and always the replacement's. When the
    /// original itself calls out through the PLT or a pointer, its callers rely on nothing
    /// caller-saved, and the image stays a bare `jmp`.
    ///
    /// `originalSlot`: the replacement's HOOKIT_ORIGINAL variable, if it has one: a call through
    /// it reaches the original, so it adds what the original may write, not everything.
    func registersToGiveBack(original site: PatchSite, replacement: UInt64, originalSlot: UInt64?) throws -> RegisterSet {
        let f = site.function
        let extent = f.address..<f.address + max(f.size, 1)
        let originalFunctions = symbols.functions(in: site.module)
        let originalWrites = RegisterUse.written(by: extent, in: site.module, functions: originalFunctions, bound: .assumedByCallers)
        var pointers: [UInt64: RegisterSet] = [:]
        if let slot = originalSlot {
            pointers[slot] = RegisterUse.written(by: extent, in: site.module, functions: originalFunctions, bound: .atMost)
        }
        let replacementWrites = try writtenAtMost(byProgramAt: replacement, pointers: pointers)
        let exposed = replacementWrites.subtracting(originalWrites).subtracting(.rax)
        guard !exposed.isEmpty else { return [] }
        // The image's own scratch register (the stack-argument copy) is given back too when a
        // caller may rely on it.
        return exposed.union(RegisterSet.r11.subtracting(originalWrites))
    }
}
