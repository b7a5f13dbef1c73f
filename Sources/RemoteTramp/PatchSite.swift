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
    /// What those bytes hold now, identical to the ELF file.
    let original: [UInt8]
    let style: Style

    static let patchLength = 5
    static let endbr64: [UInt8] = [0xF3, 0x0F, 0x1E, 0xFA]
    static let nop5: [UInt8] = [0x0F, 0x1F, 0x44, 0x00, 0x00]
    static let nop1x5: [UInt8] = [0x90, 0x90, 0x90, 0x90, 0x90]

    var label: String { "\(function.module):\(function.name)" }

    /// Where the original function continues after the patched bytes, for patchable entries.
    var afterPatch: UInt64 { address + UInt64(Self.patchLength) }

    /// Reads the entry, checks it against the file (a foreign patch is refused, never
    /// overwritten), and decides how to patch it.
    static func analyze(_ f: FunctionSymbol, module: Module, tracee: Tracee) throws -> PatchSite {
        let label = "\(f.module):\(f.name)"
        let window = 32
        let live = try tracee.memory.read(at: f.address, count: window)
        if let file = module.fileBytes(at: f.address, count: window), file != live {
            let i = zip(file, live).enumerated().first { $0.element.0 != $0.element.1 }!.offset
            throw TrampolineError.foreignPatch(function: label, address: f.address + UInt64(i),
                                               found: Array(live[i..<min(i + 5, window)]),
                                               expected: Array(file[i..<min(i + 5, window)]),
                                               what: describeForeign(live[i]))
        }
        let skip = Array(live.prefix(4)) == endbr64 ? 4 : 0
        let entry = Array(live[skip..<skip + patchLength])
        if entry == nop5 || entry == nop1x5 {
            return PatchSite(function: f, module: module, address: f.address + UInt64(skip), original: entry, style: .patchable)
        }
        guard f.size > 0 else {
            throw TrampolineError.cannotPatch(function: label, reason: "its size is unknown, so its branches cannot be checked")
        }
        let body = try tracee.memory.read(at: f.address, count: Int(f.size))
        let trailing = (try? tracee.memory.read(at: f.address + f.size, count: 16)) ?? []
        // Relocated once here to learn the layout (and refuse early); the block is relocated again
        // for the address it finally runs at.
        let probe: RelocatedPrologue
        do {
            probe = try Relocator.relocate(function: body, trailing: trailing, address: f.address, destination: f.address)
        } catch {
            throw TrampolineError.cannotPatch(function: label, reason: "\(error)")
        }
        let at = f.address + UInt64(probe.patchOffset)
        let bytes = Array((body + trailing)[probe.patchOffset..<probe.patchOffset + patchLength])
        return PatchSite(function: f, module: module, address: at, original: bytes, style: .relocated(probe, body: body, trailing: trailing))
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
