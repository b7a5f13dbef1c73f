import CPtrace
import Injector

/// How many bytes of its caller's frame a function may read as stack arguments: what a
/// call-original image must copy below its own frame so that the original, called from the
/// image, finds them at its rsp+8 (ImageBuilder). Most functions have none, and copying 256
/// bytes on every call was the largest part of an fexit image's cost.
///
/// Read from the function's machine code (Zydis) and its call frame information (.eh_frame,
/// libdw), which every x86-64 object compiled from C, C++ or Rust carries for unwinding: at each
/// instruction, CFA = reg + k says where the caller's frame starts (the return address is at
/// CFA-8; the stack arguments at CFA and above). So:
///
/// - a memory operand [reg + disp] of the CFA's register reads `disp + size - k` bytes of
///   arguments when that is positive; [rsp + disp] in a frame-pointer frame (CFA = rbp + k) is
///   counted the same way, which over-estimates, as rsp <= rbp there;
/// - a `lea` of an address at or above the CFA (va_start, a parameter's address) lets the
///   arguments be read anywhere: unknown;
/// - a jump out of the function (a tail call or a cold part) shares the frame: the code it reaches
///   is read too, by its symbol; a jump through a register or pointer with the entry's CFA (rsp+8:
///   a tail call through a pointer) cannot be followed: unknown;
/// - no CFI, a CFA that is an expression (a realigned stack) or another register, an indexed
///   access above the CFA, undecodable bytes: unknown.
///
/// Calls need nothing: a callee's arguments are in the frame the function builds for it. By C's
/// rules a pointer to a local cannot reach beyond that local, so `mov reg, rsp` is no escape.
/// Unknown means "copy the most" (`StackArguments.unknown`), the image's old behaviour.
enum StackArguments {
    static let unknown = ImageBuilder.stackArgumentBytes
    /// Code regions followed per function at most (the function, its cold part, tail callees).
    static let maxRegions = 16

    /// The bytes to copy, rounded up to 16 (the image keeps rsp 16-byte aligned), at most `unknown`.
    static func bytesRead(by function: Range<UInt64>, in module: Module, frames: FrameInfo?,
                          extents: [Range<UInt64>]) -> Int32 {
        guard let frames else { return unknown }
        var walk = Walk(module: module, frames: frames, extents: extents)
        guard let bytes = walk.run(from: function) else { return unknown }
        return min(unknown, Int32((bytes + 15) & ~15))
    }

    private struct Walk {
        let module: Module
        let frames: FrameInfo
        let extents: [Range<UInt64>]
        var visited = Set<UInt64>()
        var queue: [Range<UInt64>] = []
        var bytes: Int64 = 0

        init(module: Module, frames: FrameInfo, extents: [Range<UInt64>]) {
            self.module = module
            self.frames = frames
            self.extents = extents
        }

        /// nil: unknown.
        mutating func run(from start: Range<UInt64>) -> Int64? {
            queue = [start]
            visited = [start.lowerBound]
            while let range = queue.popLast() {
                guard visited.count <= StackArguments.maxRegions, sweep(range) else { return nil }
            }
            return bytes
        }

        /// false: unknown.
        mutating func sweep(_ range: Range<UInt64>) -> Bool {
            guard !range.isEmpty, let code = module.fileBytes(at: range.lowerBound, count: range.count) else { return false }
            var rows = frames.rows(bias: module.bias)
            var offset = 0
            while offset < code.count {
                let address = range.lowerBound + UInt64(offset)
                var insn = hk_stack_use()
                let rc = code[offset...].withUnsafeBufferPointer { hk_decode_stack_use($0.baseAddress, $0.count, address, &insn) }
                guard rc == 0, let cfa = rows.rule(at: address), cfa.register == .rsp || cfa.register == .rbp else { return false }
                guard account(insn, cfa), follow(insn, cfa, inside: range) else { return false }
                offset += Int(insn.length)
            }
            return true
        }

        /// Adds what the instruction's memory operands read of the caller's frame; false when
        /// it takes an address there.
        mutating func account(_ insn: hk_stack_use, _ cfa: FrameInfo.Rule) -> Bool {
            let ops = [insn.mem.0, insn.mem.1].prefix(Int(insn.count))
            for m in ops {
                // rbp is a frame register only when the CFA says so; else any pointer.
                guard m.base == FrameInfo.Register.rsp.hardware || (m.base == FrameInfo.Register.rbp.hardware && cfa.register == .rbp) else { continue }
                let reach = m.disp + Int64(max(m.size, 1)) - cfa.offset
                if m.is_address != 0 {
                    if m.disp >= cfa.offset { return false }
                    continue
                }
                guard reach > 0 else { continue }
                if m.has_index != 0 { return false }
                bytes = max(bytes, reach)
            }
            return true
        }

        mutating func follow(_ insn: hk_stack_use, _ cfa: FrameInfo.Rule, inside range: Range<UInt64>) -> Bool {
            switch Int32(insn.flow) {
            case Int32(HK_FLOW_JMP), Int32(HK_FLOW_JCC):
                guard !range.contains(insn.target) else { return true }
                guard let r = extents.range(containing: insn.target) else { return false }
                if visited.insert(r.lowerBound).inserted { queue.append(r) }
                return true
            case Int32(HK_FLOW_JMP_REGISTER), Int32(HK_FLOW_JMP_POINTER):
                // With the entry's frame, a jump through a pointer may be a tail call: its target
                // reads this function's arguments. Elsewhere it is a switch inside the function.
                return !(cfa.register == .rsp && cfa.offset == 8)
            default:
                return true
            }
        }
    }
}

/// A module's call frame information (.eh_frame through libdw), open while hookit needs it.
final class FrameInfo {
    enum Register: Int32 {
        case rbp = 6, rsp = 7          // DWARF numbers
        var hardware: Int8 { self == .rsp ? 4 : 5 }
    }

    struct Rule { let register: Register; let offset: Int64 }

    private let index: OpaquePointer

    init?(path: String) {
        guard let i = hk_fde_open(path) else { return nil }
        index = i
    }

    deinit { hk_fde_close(index) }

    /// Rules looked up row by row: one libdw query per CFA change, not per instruction.
    struct Rows {
        let frames: FrameInfo
        let bias: UInt64
        var row: Range<UInt64> = 0..<0
        var rule: Rule?

        /// nil: no FDE covers `address`, or its CFA is not a register plus an offset.
        mutating func rule(at address: UInt64) -> Rule? {
            if row.contains(address) { return rule }
            var reg: Int32 = 0, offset: Int64 = 0, start: UInt64 = 0, end: UInt64 = 0
            let rc = hk_fde_cfa(frames.index, address &- bias, &reg, &offset, &start, &end)
            guard rc >= 0, end > start else { row = 0..<0; return nil }
            row = (start &+ bias)..<(end &+ bias)
            rule = rc == 0 ? Register(rawValue: reg).map { Rule(register: $0, offset: offset) } : nil
            return rule
        }
    }

    func rows(bias: UInt64) -> Rows { Rows(frames: self, bias: bias) }
}

/// What the table knows of stack arguments: per function, once; per module, its CFI and its
/// function extents, opened on first use and kept while the table lives.
final class StackArgumentCache {
    private var bytes: [UInt64: Int32] = [:]
    private var frames: [String: FrameInfo?] = [:]
    private var extents: [String: [Range<UInt64>]] = [:]

    func bytes(for site: PatchSite, symbols: SymbolTable) -> Int32 {
        let f = site.function
        if let b = bytes[f.address] { return b }
        let module = site.module
        var b = StackArguments.unknown
        if f.size > 0, case .file(let path) = module.source {
            if frames[path] == nil { frames[path] = .some(FrameInfo(path: path)) }
            if extents[path] == nil { extents[path] = RegisterUse.extents(symbols.functions(in: module)) }
            b = StackArguments.bytesRead(by: f.address..<f.address + f.size, in: module, frames: frames[path]!,
                                         extents: extents[path]!)
        }
        bytes[f.address] = b
        return b
    }
}
