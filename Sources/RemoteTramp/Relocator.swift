import CPtrace

/// The prologue relocator: moves the first instructions of a function (the ones its 5-byte
/// `jmp rel32` patch overwrites) into a trampoline image so the original can still be run.
///
/// It reads the function one instruction at a time (Zydis, through `hk_decode_insn`) and
/// rewrites each one through `X86Writer` for the address the copy will run at. It refuses,
/// with the offset and the instruction, whatever it cannot prove correct: a corrupt patch
/// is far worse than a function that cannot be hooked.
///
/// Rewritten: jmp/jcc rel8|rel32 (to rel32, or an absolute jump when out of reach), call
/// rel32 (callFar), loop/loopz/loopnz/jrcxz (widened through a short trampoline, since they
/// have no rel32 form), [rip+disp32] operands (new displacement). Copied: everything else
/// that does not depend on its address. Refused: xbegin and any other relative operand,
/// calls into the displaced bytes, and any branch from the rest of the function into them.

public struct RelocatedPrologue: Sendable {
    /// Where the 5-byte jmp goes: 4 when the function starts with endbr64, which must stay
    /// the first instruction so indirect calls still land on it under IBT; else 0.
    public let patchOffset: Int
    /// Bytes of whole instructions from `patchOffset`, covering at least 5 (may include
    /// trailing padding, which is counted here but not copied).
    public let displacedLength: Int
    /// The displaced instructions rewritten to run at `destination`, then a jump back to
    /// function + patchOffset + displacedLength (unless they end with a ret or jmp).
    public let code: [UInt8]
    /// For each displaced instruction: its offset from `patchOffset` -> the offset of its
    /// rewritten form in `code`. A thread stopped inside the displaced bytes moves there.
    public let pcMap: [(original: Int, relocated: Int)]
}

public enum RelocationError: Error, Equatable, CustomStringConvertible {
    /// The bytes at `offset` are not a valid x86-64 instruction.
    case undecodable(offset: Int, bytes: [UInt8])
    /// The function is smaller than the patch and the bytes after it are not padding.
    case tooShort(size: Int, needed: Int)
    /// A ret or jmp ends the function before the patch is covered, and what follows it is
    /// not padding (it is code some branch may reach, and the patch would overwrite it).
    case endsBeforePatch(offset: Int, instruction: String)
    /// The instruction at `offset` runs past the function's end (wrong symbol size, or data).
    case crossesFunctionEnd(offset: Int, instruction: String)
    /// A branch elsewhere in the function lands in the bytes the patch overwrites.
    case branchIntoPatch(offset: Int, instruction: String)
    /// A displaced instruction depends on its address in a way that cannot be rewritten.
    case unrelocatable(offset: Int, instruction: String, reason: String)
    /// A displaced RIP-relative operand's target is out of rel32 reach of `destination`.
    case ripTargetOutOfReach(offset: Int, instruction: String, target: UInt64)
    /// The writer refused what the relocator asked of it (a bug in the relocator).
    case writer(WriterError)

    public var description: String {
        switch self {
        case .undecodable(let off, let bytes):
            let hex = bytes.map { String($0, radix: 16).leftPadded(2) }.joined(separator: " ")
            return "cannot decode the instruction at \(plus(off)) (bytes \(hex))"
        case .tooShort(let size, let needed):
            let extra = needed > 5 ? " after its \(needed - 5)-byte endbr64" : ""
            return "function is \(size) bytes, the patch needs 5\(extra), and the bytes after it are not padding"
        case .endsBeforePatch(let off, let insn):
            return "\(plus(off)) (\(insn)) ends the function within the 5 bytes the patch needs, "
                + "and the bytes after it are not padding"
        case .crossesFunctionEnd(let off, let insn):
            return "the instruction at \(plus(off)) (\(insn)) runs past the end of the function"
        case .branchIntoPatch(let off, let insn):
            return "branch at \(plus(off)) (\(insn)) goes back into the displaced bytes"
        case .unrelocatable(let off, let insn, let reason):
            return "cannot relocate \(plus(off)) (\(insn)): \(reason)"
        case .ripTargetOutOfReach(let off, let insn, let target):
            return "cannot relocate \(plus(off)) (\(insn)): its operand at 0x\(String(target, radix: 16)) "
                + "is out of rel32 reach of the trampoline"
        case .writer(let e):
            return "internal error relocating the prologue: \(e)"
        }
    }
}

public enum Relocator {
    /// The size of the patch: `jmp rel32`.
    static let patchSize = 5

    /// function: the function's bytes (its whole symbol size), trailing: the bytes that follow
    /// it in memory (may be empty), address: its runtime address, destination: where `code`
    /// will run.
    public static func relocate(function: [UInt8], trailing: [UInt8], address: UInt64,
                                destination: UInt64) throws -> RelocatedPrologue {
        let text = Text(function: function, trailing: trailing, address: address)

        // 1. endbr64 stays where it is: under IBT an indirect call must land on it.
        var patchOffset = 0
        if let first = try? text.instruction(at: 0), first.info.is_endbr64 != 0 { patchOffset = first.length }
        let needed = patchOffset + patchSize

        // 2. The displaced instructions: whole instructions from patchOffset covering the
        //    patch, stopping early at a ret or jmp (nothing after it runs on this path).
        var displaced: [Instruction] = []
        var end = patchOffset
        while end < needed && end < function.count {
            let insn = try text.instruction(at: end)
            displaced.append(insn)
            end = insn.end
            if insn.endsFlow { break }
        }

        // 3. Whatever of the patch is not covered yet must be padding that nothing executes
        //    (int3, nops between functions): it is overwritten but needs no copy.
        var displacedEnd = end
        if end < needed {
            guard !displaced.isEmpty, let padEnd = text.paddingEnd(from: end, covering: needed) else {
                if function.count < needed { throw RelocationError.tooShort(size: function.count, needed: needed) }
                let last = displaced[displaced.count - 1]
                throw RelocationError.endsBeforePatch(offset: last.offset, instruction: last.text)
            }
            displacedEnd = padEnd
        }
        let patched = (address &+ UInt64(patchOffset))..<(address &+ UInt64(displacedEnd))

        // 4. No other instruction may branch into the patched bytes: after the patch they hold
        //    the jmp (or the middle of it). A linear sweep of the whole symbol finds direct
        //    branches; a call to the entry itself is a recursive call and should be hooked.
        //    Indirect jumps (jump tables) cannot be seen here.
        var at = 0
        while at < function.count {
            let insn = try text.instruction(at: at)
            let isDisplaced = at >= patchOffset && at < end
            if !isDisplaced, insn.isBranch, patched.contains(insn.target),
               !(insn.kind == .call && insn.target == patched.lowerBound) {
                throw RelocationError.branchIntoPatch(offset: insn.offset, instruction: insn.text)
            }
            at = insn.end
        }

        // 5. Rewrite each displaced instruction for `destination`, then jump back.
        let w = X86Writer(base: destination)
        var labels: [UInt64: Label] = [:]   // original address -> its rewritten copy
        for insn in displaced { labels[insn.address] = w.newLabel() }
        var pcMap: [(original: Int, relocated: Int)] = []
        for insn in displaced {
            w.bind(labels[insn.address]!)
            pcMap.append((original: insn.offset - patchOffset, relocated: w.offset))
            try emit(insn, to: w, patched: patched, labels: labels)
        }
        if !displaced[displaced.count - 1].endsFlow {
            w.jmpFar(address &+ UInt64(displacedEnd))
        }
        let code: [UInt8]
        do { code = try w.finish() } catch let e as WriterError { throw RelocationError.writer(e) }
        return RelocatedPrologue(patchOffset: patchOffset, displacedLength: displacedEnd - patchOffset,
                                 code: code, pcMap: pcMap)
    }

    /// Rewrites one displaced instruction. Branches are re-encoded to the same absolute
    /// target (or to the copy of a displaced instruction, for a branch among them); RIP-relative
    /// operands get a new displacement; everything else is position-independent and copied.
    private static func emit(_ insn: Instruction, to w: X86Writer, patched: Range<UInt64>,
                             labels: [UInt64: Label]) throws {
        // A branch target inside the patched bytes must be the start of a displaced
        // instruction; its copy is the new target.
        var inside: Label?
        if insn.isBranch && patched.contains(insn.target) && insn.kind != .call {
            guard let l = labels[insn.target] else {
                throw RelocationError.unrelocatable(offset: insn.offset, instruction: insn.text,
                                                    reason: "it branches into the middle of the displaced bytes")
            }
            inside = l
        }
        switch insn.kind {
        case .none:
            guard insn.info.rip_relative != 0 else { w.raw(insn.bytes); return }
            // [rip + disp32] is relative to the end of the instruction, which moves.
            let newEnd = w.pc &+ UInt64(insn.length)
            let disp = Int64(bitPattern: insn.info.rip_target &- newEnd)
            guard let d32 = Int32(exactly: disp) else {
                throw RelocationError.ripTargetOutOfReach(offset: insn.offset, instruction: insn.text,
                                                          target: insn.info.rip_target)
            }
            var b = insn.bytes
            let at = Int(insn.info.disp_offset)
            b.put(UInt32(bitPattern: d32), at: at)
            w.raw(b)

        case .jmp:
            if let l = inside { w.jmp(l) } else { w.jmpFar(insn.target) }

        case .jcc:
            let c = Cond(rawValue: insn.info.cond)!
            if let l = inside {
                w.jcc(c, l)
            } else if X86Writer.reachable(from: w.pc &+ 6, to: insn.target) {
                w.jcc(c, insn.target)
            } else {
                // jcc has no far form: the inverted condition skips an absolute jump.
                let skip = w.newLabel()
                w.jcc(Cond(rawValue: c.rawValue ^ 1)!, skip)
                w.jmpFar(insn.target)
                w.bind(skip)
            }

        case .call:
            // A call to the entry is recursion and goes through the patch, as any call should.
            // A call to another displaced instruction is a get-PC idiom: the address it pushes
            // would be the copy's, not the original's.
            if patched.contains(insn.target) && insn.target != patched.lowerBound {
                throw RelocationError.unrelocatable(offset: insn.offset, instruction: insn.text,
                                                    reason: "it calls into the displaced bytes (its return address would change)")
            }
            // Not a call from the copy: push the original return address and jump. The callee
            // then returns into the function's own (unpatched) code, so no return address ever
            // points into the relocated block — unwinding uses the function's own CFI, and the
            // block can be freed without scanning stacks for it.
            let ret = insn.address &+ UInt64(insn.length)
            w.lea(.rsp, .rsp, -8)                                  // lea: the flags stay as they are
            w.raw([0xC7, 0x04, 0x24]); w.u32(UInt32(truncatingIfNeeded: ret))        // mov dword [rsp], lo
            w.raw([0xC7, 0x44, 0x24, 0x04]); w.u32(UInt32(truncatingIfNeeded: ret >> 32)) // mov dword [rsp+4], hi
            w.jmpFar(insn.target)

        case .loop:
            // loop/loopz/loopnz/jrcxz have only a rel8 form. Keep the instruction (prefixes
            // and all) and point its rel8 at an absolute jump right after a jump over it:
            //     loopX +5 ; jmp skip ; jmp target ; skip:
            var b = insn.bytes
            b[Int(insn.info.rel_offset)] = 5
            w.raw(b)
            let skip = w.newLabel()
            w.jmp(skip)                                   // E9 rel32: the 5 bytes loopX skips
            if let l = inside { w.jmp(l) } else { w.jmpFar(insn.target) }
            w.bind(skip)

        case .other:
            throw RelocationError.unrelocatable(offset: insn.offset, instruction: insn.text,
                                                reason: "its relative operand has no wider form to re-encode")
        }
    }
}

/// One decoded instruction of the function.
struct Instruction {
    enum Kind { case none, jmp, jcc, call, loop, other }

    let offset: Int          // from the function's first byte
    let address: UInt64
    let bytes: [UInt8]
    let info: hk_insn
    let text: String

    var length: Int { Int(info.length) }
    var end: Int { offset + length }
    var endsFlow: Bool { info.ends_flow != 0 }
    var isBranch: Bool { kind != .none }
    var target: UInt64 { info.branch_target }

    var kind: Kind {
        switch Int(info.branch) {
        case HK_BRANCH_NONE: return .none
        case HK_BRANCH_JMP: return .jmp
        case HK_BRANCH_JCC: return .jcc
        case HK_BRANCH_CALL: return .call
        case HK_BRANCH_LOOP: return .loop
        default: return .other
        }
    }
}

/// The function's bytes and what follows them, decoded on demand.
private struct Text {
    let function: [UInt8]
    let all: [UInt8]         // function + trailing
    let address: UInt64

    init(function: [UInt8], trailing: [UInt8], address: UInt64) {
        self.function = function
        self.all = function + trailing
        self.address = address
    }

    /// Decodes `bytes[offset...]`, or nil when the bytes are not a whole valid instruction.
    static func decode(_ bytes: [UInt8], at offset: Int, address: UInt64) -> Instruction? {
        guard offset < bytes.count else { return nil }
        var info = hk_insn()
        let rc = bytes.withUnsafeBufferPointer {
            hk_decode_insn($0.baseAddress! + offset, $0.count - offset, address, &info)
        }
        guard rc == 0 else { return nil }
        let text = withUnsafeBytes(of: info.text) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return Instruction(offset: offset, address: address,
                           bytes: Array(bytes[offset..<offset + Int(info.length)]), info: info, text: text)
    }

    /// The instruction at `offset`, which must lie wholly inside the function.
    func instruction(at offset: Int) throws -> Instruction {
        let at = address &+ UInt64(offset)
        if let insn = Self.decode(function, at: offset, address: at) { return insn }
        if let insn = Self.decode(all, at: offset, address: at) {
            throw RelocationError.crossesFunctionEnd(offset: offset, instruction: insn.text)
        }
        throw RelocationError.undecodable(offset: offset, bytes: Array(all[offset..<min(all.count, offset + 15)]))
    }

    /// The end of the run of padding instructions (int3, nop) starting at `offset`, once it
    /// reaches `covering`; nil if anything else comes first.
    func paddingEnd(from offset: Int, covering: Int) -> Int? {
        var at = offset
        while at < covering {
            guard let insn = Self.decode(all, at: at, address: address &+ UInt64(at)),
                  insn.info.is_int3 != 0 || insn.info.is_nop != 0 else { return nil }
            at = insn.end
        }
        return at
    }
}

private func plus(_ offset: Int) -> String { "+0x" + String(offset, radix: 16) }

private extension String {
    func leftPadded(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}
