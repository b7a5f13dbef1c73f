import CPtrace
import Injector

/// A set of registers, in the classes the decoder reports (hk_zydis.h): general registers by
/// hardware number, vector registers 0-31 whatever their width, the x87/MMX stack, the masks.
public struct RegisterSet: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    static func gpr(_ n: Int) -> RegisterSet { RegisterSet(rawValue: 1 << UInt64(n)) }
    static func vector(_ n: Int) -> RegisterSet { RegisterSet(rawValue: 1 << UInt64(16 + n)) }
    static let rax = gpr(0), rcx = gpr(1), rdx = gpr(2), rsi = gpr(6), rdi = gpr(7)
    static let r8 = gpr(8), r9 = gpr(9), r10 = gpr(10), r11 = gpr(11)
    static let x87 = RegisterSet(rawValue: 1 << UInt64(HK_WRITES_X87))
    static let masks = RegisterSet(rawValue: 1 << UInt64(HK_WRITES_MASK))
    static let vectors = RegisterSet(rawValue: 0xFFFF_FFFF << 16)
    static let callerSavedGPRs: RegisterSet = [.rax, .rcx, .rdx, .rsi, .rdi, .r8, .r9, .r10, .r11]
    /// What the SysV ABI lets any call change: all a caller assumes of a function it cannot see.
    public static let callClobbered: RegisterSet = [.callerSavedGPRs, .vectors, .x87, .masks]
    /// The vector, x87 and mask part: what only an XSAVE/XRSTOR gives back whole.
    static let extended: RegisterSet = [.vectors, .x87, .masks]

    /// The caller-saved general registers in this set, as the writer names them.
    var gprs: [Reg] {
        Reg.allCases.filter { let r = RegisterSet.gpr(Int($0.rawValue)); return RegisterSet.callerSavedGPRs.contains(r) && contains(r) }
    }
}

/// Which registers a function may change, read from its machine code and from every function it
/// reaches by direct calls and jumps inside its module (the static call graph, decoded with
/// Zydis from the module's file).
///
/// Why hookit needs it: GCC's -fipa-ra lets a caller keep values in caller-saved registers across
/// a direct call to a function whose code it has seen, in the registers that function (and what
/// it calls) leaves alone. So what a caller assumes of a call is exactly "the registers written
/// by the callee's code and its known callees; for any call it cannot follow (through a pointer,
/// through the PLT), everything the ABI allows". Two bounds serve two questions:
///
/// - `.assumedByCallers` (a lower bound on what a -fipa-ra caller expects to lose): for the
///   hooked original. Code that cannot be followed adds what GCC would add: an indirect call or
///   a jump through a pointer (PLT stubs, tail calls through a function pointer) adds every
///   call-clobbered register; a jump through a register or a table without base (a switch) and a
///   branch into code with neither symbol nor FDE add nothing. Missing a register here only makes
///   hookit give back more than it must.
/// - `.atMost` (an upper bound): for a replacement that hookit must wrap. Anything that cannot be
///   followed may change every call-clobbered register.
enum RegisterUse {
    enum Bound { case assumedByCallers, atMost }

    /// Functions visited at most per question; a larger call graph is cut off at that bound
    /// (for `.atMost` as "may change everything").
    static let maxFunctions = 512

    /// `pointers`: function pointers whose target is known, by the pointer's address, with
    /// what that target writes (a replacement's HOOKIT_ORIGINAL variable, which hookit fills
    /// in with the original); a call or jump through one of them adds just that.
    /// `readPointer` reads a pointer of the tracee (a GOT entry holding such a variable's address).
    static func written(by function: Range<UInt64>, in module: Module, functions: [FunctionSymbol], bound: Bound,
                        pointers: [UInt64: RegisterSet] = [:], readPointer: @escaping (UInt64) -> UInt64? = { _ in nil }) -> RegisterSet {
        var walk = Walk(module: module, bound: bound, extents: extents(functions), pointers: pointers, readPointer: readPointer)
        return walk.run(from: function)
    }

    /// Function extents of a module, sorted and without aliases.
    static func extents(_ functions: [FunctionSymbol]) -> [Range<UInt64>] {
        var seen = Set<UInt64>()
        return functions.filter { $0.size > 0 && seen.insert($0.address).inserted }
            .map { $0.address..<$0.address + $0.size }.sorted { $0.lowerBound < $1.lowerBound }
    }

    private struct Walk {
        let module: Module
        let bound: Bound
        let extents: [Range<UInt64>]
        let pointers: [UInt64: RegisterSet]
        let readPointer: (UInt64) -> UInt64?
        var fdes: OpaquePointer?
        var fdesOpened = false
        var visited = Set<UInt64>()
        var queue: [Range<UInt64>] = []
        var result: RegisterSet = []

        init(module: Module, bound: Bound, extents: [Range<UInt64>], pointers: [UInt64: RegisterSet],
             readPointer: @escaping (UInt64) -> UInt64?) {
            self.module = module
            self.bound = bound
            self.extents = extents
            self.pointers = pointers
            self.readPointer = readPointer
        }

        var unknown: RegisterSet { bound == .atMost ? .callClobbered : [] }

        mutating func run(from start: Range<UInt64>) -> RegisterSet {
            defer { if let f = fdes { hk_fde_close(f) } }
            enqueue(start)
            while let range = queue.popLast(), !result.isSuperset(of: .callClobbered) {
                if visited.count > RegisterUse.maxFunctions { result.formUnion(unknown); break }
                sweep(range)
            }
            return result.intersection(.callClobbered)
        }

        mutating func enqueue(_ r: Range<UInt64>) {
            if visited.insert(r.lowerBound).inserted { queue.append(r) }
        }

        /// A linear sweep of one function's bytes, as the file has them.
        mutating func sweep(_ range: Range<UInt64>) {
            guard let code = module.fileBytes(at: range.lowerBound, count: range.count) else { result.formUnion(unknown); return }
            let insns = decode(code, at: range.lowerBound)
            var tracker = PointerTracker(enabled: !pointers.isEmpty, insns: insns, range: range)
            for (address, insn) in insns {
                guard let insn else { result.formUnion(unknown); continue }
                tracker.arrive(at: address)
                result.formUnion(RegisterSet(rawValue: insn.written & ~(UInt64(1) << UInt64(HK_WRITES_ALL_VECTOR))))
                if insn.written & (UInt64(1) << UInt64(HK_WRITES_ALL_VECTOR)) != 0 { result.formUnion(.extended) }
                follow(insn, inside: range, known: tracker.target(of: insn).flatMap { pointers[$0] })
                tracker.update(after: insn, readPointer: readPointer, known: pointers)
            }
        }

        /// Every instruction of `code` (nil where the bytes are no instruction; one byte on).
        func decode(_ code: [UInt8], at base: UInt64) -> [(UInt64, hk_writes?)] {
            var out: [(UInt64, hk_writes?)] = []
            var offset = 0
            while offset < code.count {
                var insn = hk_writes()
                let address = base + UInt64(offset)
                let rc = code[offset...].withUnsafeBufferPointer { hk_decode_writes($0.baseAddress, $0.count, address, &insn) }
                out.append((address, rc == 0 ? insn : nil))
                offset += rc == 0 ? Int(insn.length) : 1
            }
            return out
        }

        /// `known`: what the target of an indirect call or jump writes, when the pointer it goes
        /// through is known (PointerTracker).
        mutating func follow(_ insn: hk_writes, inside range: Range<UInt64>, known: RegisterSet?) {
            switch Int32(insn.flow) {
            case Int32(HK_FLOW_JMP), Int32(HK_FLOW_JCC), Int32(HK_FLOW_CALL):
                if !range.contains(insn.target) { reach(insn.target) }
            case Int32(HK_FLOW_CALL_INDIRECT), Int32(HK_FLOW_JMP_POINTER):
                result.formUnion(known ?? .callClobbered)
            case Int32(HK_FLOW_JMP_REGISTER):
                result.formUnion(known ?? unknown)
            default:
                break
            }
        }

        /// Code reached from outside the function being swept: a function of the module by its
        /// symbol, or else by its .eh_frame FDE (PLT stubs, stripped locals); else unknown.
        mutating func reach(_ target: UInt64) {
            if let r = extent(containing: target) ?? fdeExtent(containing: target) { enqueue(r) }
            else { result.formUnion(unknown) }
        }

        func extent(containing a: UInt64) -> Range<UInt64>? { extents.range(containing: a) }

        mutating func fdeExtent(containing a: UInt64) -> Range<UInt64>? {
            if !fdesOpened {
                fdesOpened = true
                if case .file(let path) = module.source { fdes = hk_fde_open(path) }
            }
            guard let index = fdes else { return nil }
            var start: UInt64 = 0, end: UInt64 = 0
            guard hk_fde_range(index, a &- module.bias, &start, &end) == 0, end > start else { return nil }
            return (start &+ module.bias)..<(end &+ module.bias)
        }
    }
}

/// Follows a known function pointer from its load to the call or jump through it, within a
/// straight run of code: `lea r, [rip+P]` or `mov r, [rip+GOT]` (r = P), `mov r2, [r]` (r2 = *P),
/// then `call *r2`, `jmp *(r)` or `call *[rip+P]` — how gcc calls through a global variable of
/// a shared library. What a register holds is forgotten when anything writes it, after every
/// call, and at every branch target; a function with a jump table (targets unknown) is not
/// followed at all. A pointer not followed counts as unknown, never as known.
private struct PointerTracker {
    let enabled: Bool
    private let labels: Set<UInt64>
    private var addressOf: [Int8: UInt64] = [:]     // register = P
    private var valueOf: [Int8: UInt64] = [:]       // register = *P

    init(enabled: Bool, insns: [(UInt64, hk_writes?)], range: Range<UInt64>) {
        var labels = Set<UInt64>(), jumpTable = false
        if enabled {
            for (_, i) in insns {
                guard let i else { continue }
                let flow = Int32(i.flow)
                // A jump through a register or an indexed table may land anywhere in the function.
                if flow == Int32(HK_FLOW_JMP_REGISTER) || (flow == Int32(HK_FLOW_JMP_POINTER) && i.plain == 0) { jumpTable = true }
                if (flow == Int32(HK_FLOW_JMP) || flow == Int32(HK_FLOW_JCC)) && range.contains(i.target) { labels.insert(i.target) }
            }
        }
        self.enabled = enabled && !jumpTable
        self.labels = labels
    }

    mutating func arrive(at address: UInt64) {
        if labels.contains(address) { addressOf.removeAll(); valueOf.removeAll() }
    }

    /// The pointer an indirect call or jump goes through, when known.
    func target(of i: hk_writes) -> UInt64? {
        let flow = Int32(i.flow)
        guard flow == Int32(HK_FLOW_CALL_INDIRECT) || flow == Int32(HK_FLOW_JMP_POINTER) || flow == Int32(HK_FLOW_JMP_REGISTER) else { return nil }
        if i.through_rip != 0 { return i.target }
        guard enabled else { return nil }
        if i.via >= 0 { return valueOf[i.via] }
        if i.base >= 0 && i.base != Int8(HK_BASE_RIP) && i.plain != 0 { return addressOf[i.base] }
        return nil
    }

    mutating func update(after i: hk_writes, readPointer: (UInt64) -> UInt64?, known: [UInt64: RegisterSet]) {
        guard enabled else { return }
        let flow = Int32(i.flow)
        if flow == Int32(HK_FLOW_CALL) || flow == Int32(HK_FLOW_CALL_INDIRECT) { addressOf.removeAll(); valueOf.removeAll(); return }
        let fromBase = i.base >= 0 && i.base != Int8(HK_BASE_RIP) ? addressOf[i.base] : nil
        for r in 0..<16 where i.written & (1 << UInt64(r)) != 0 {
            addressOf[Int8(r)] = nil
            valueOf[Int8(r)] = nil
        }
        guard i.dest >= 0, i.plain != 0 else { return }
        switch Int32(i.op) {
        case Int32(HK_OP_LEA) where i.base == Int8(HK_BASE_RIP):
            addressOf[i.dest] = i.address
        case Int32(HK_OP_LOAD) where i.base == Int8(HK_BASE_RIP):
            if known[i.address] != nil { valueOf[i.dest] = i.address }
            else if let p = readPointer(i.address), known[p] != nil { addressOf[i.dest] = p }   // a GOT entry
        case Int32(HK_OP_LOAD):
            if let p = fromBase { valueOf[i.dest] = p }
        default:
            break
        }
    }
}
