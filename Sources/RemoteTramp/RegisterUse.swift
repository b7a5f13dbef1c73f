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

    static func written(by function: Range<UInt64>, in module: Module, functions: [FunctionSymbol], bound: Bound) -> RegisterSet {
        var walk = Walk(module: module, bound: bound, extents: extents(functions))
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
        var fdes: OpaquePointer?
        var fdesOpened = false
        var visited = Set<UInt64>()
        var queue: [Range<UInt64>] = []
        var result: RegisterSet = []

        init(module: Module, bound: Bound, extents: [Range<UInt64>]) {
            self.module = module
            self.bound = bound
            self.extents = extents
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
            var offset = 0
            while offset < code.count {
                var insn = hk_writes()
                let address = range.lowerBound + UInt64(offset)
                let rc = code[offset...].withUnsafeBufferPointer { hk_decode_writes($0.baseAddress, $0.count, address, &insn) }
                guard rc == 0 else { result.formUnion(unknown); offset += 1; continue }
                result.formUnion(RegisterSet(rawValue: insn.written & ~(UInt64(1) << UInt64(HK_WRITES_ALL_VECTOR))))
                if insn.written & (UInt64(1) << UInt64(HK_WRITES_ALL_VECTOR)) != 0 { result.formUnion(.extended) }
                follow(insn, inside: range)
                offset += Int(insn.length)
            }
        }

        mutating func follow(_ insn: hk_writes, inside range: Range<UInt64>) {
            switch Int32(insn.flow) {
            case Int32(HK_FLOW_JMP), Int32(HK_FLOW_JCC), Int32(HK_FLOW_CALL):
                if !range.contains(insn.target) { reach(insn.target) }
            case Int32(HK_FLOW_CALL_INDIRECT), Int32(HK_FLOW_JMP_POINTER):
                result.formUnion(.callClobbered)
            case Int32(HK_FLOW_JMP_REGISTER):
                result.formUnion(unknown)
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

        func extent(containing a: UInt64) -> Range<UInt64>? {
            var lo = 0, hi = extents.count
            while lo < hi { let mid = (lo + hi) / 2; if extents[mid].lowerBound <= a { lo = mid + 1 } else { hi = mid } }
            return lo > 0 && extents[lo - 1].contains(a) ? extents[lo - 1] : nil
        }

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
