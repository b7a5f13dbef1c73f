/// An x86-64 assembler for the handful of instructions trampolines need: one call per
/// instruction, labels bound anywhere and resolved by `finish()`. Code is assembled for the
/// address it will run at (`base`), so rel32 branches to absolute targets are exact.
public enum Reg: UInt8, Sendable, CaseIterable {
    case rax = 0, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15

    var low: UInt8 { rawValue & 7 }
    var ext: Bool { rawValue >= 8 }
}

public enum Cond: UInt8, Sendable {
    case o = 0, no, b, ae, e, ne, be, a, s, ns, p, np, l, ge, le, g
}

public struct Label: Hashable, Sendable { let id: Int }

public enum WriterError: Error, Equatable, CustomStringConvertible {
    case unboundLabel(Int)
    case outOfRange(from: UInt64, to: UInt64)

    public var description: String {
        switch self {
        case .unboundLabel(let id): return "internal error: label \(id) used but never bound"
        case .outOfRange(let from, let to):
            return "0x\(String(to, radix: 16)) is out of rel32 reach of 0x\(String(from, radix: 16))"
        }
    }
}

public final class X86Writer {
    /// The address the first byte will run at.
    public let base: UInt64
    public private(set) var bytes: [UInt8] = []
    private var labelOffsets: [Int: Int] = [:]
    private var nextLabel = 0
    private var fixups: [(at: Int, label: Label, end: Int)] = []
    /// 8-byte data fixups: a label's absolute address, or the distance between two labels.
    private var dataFixups: [(at: Int, label: Label, minus: Label?)] = []
    private var pendingError: WriterError?

    public init(base: UInt64) { self.base = base }

    /// The address of the next byte.
    public var pc: UInt64 { base &+ UInt64(bytes.count) }
    public var offset: Int { bytes.count }

    public func newLabel() -> Label {
        nextLabel += 1
        return Label(id: nextLabel)
    }

    public func bind(_ label: Label) { labelOffsets[label.id] = bytes.count }

    public func offset(of label: Label) -> Int? { labelOffsets[label.id] }

    public func address(of label: Label) -> UInt64? { labelOffsets[label.id].map { base &+ UInt64($0) } }

    /// Resolves every label reference and returns the code.
    public func finish() throws -> [UInt8] {
        if let e = pendingError { throw e }
        for f in fixups {
            guard let target = labelOffsets[f.label.id] else { throw WriterError.unboundLabel(f.label.id) }
            let rel = Int32(target - f.end)
            put32(UInt32(bitPattern: rel), at: f.at)
        }
        for f in dataFixups {
            guard let target = labelOffsets[f.label.id] else { throw WriterError.unboundLabel(f.label.id) }
            let value: UInt64
            if let m = f.minus {
                guard let from = labelOffsets[m.id] else { throw WriterError.unboundLabel(m.id) }
                value = UInt64(target - from)
            } else {
                value = base &+ UInt64(target)
            }
            bytes.put(value, at: f.at)
        }
        return bytes
    }

    /// True when `target` is reachable with a rel32 from an instruction ending at `end`.
    public static func reachable(from end: UInt64, to target: UInt64) -> Bool {
        let d = Int64(bitPattern: target &- end)
        return d >= Int64(Int32.min) && d <= Int64(Int32.max)
    }

    // MARK: - raw emission

    public func raw(_ b: [UInt8]) { bytes += b }
    public func u8(_ v: UInt8) { bytes.append(v) }
    public func u32(_ v: UInt32) { bytes += [UInt8].le(v) }
    public func u64(_ v: UInt64) { bytes += [UInt8].le(v) }

    private func put32(_ v: UInt32, at i: Int) {
        bytes.put(v, at: i)
    }

    private func rex(w: Bool, r: Bool = false, x: Bool = false, b: Bool = false, force: Bool = false) {
        let v: UInt8 = 0x40 | (w ? 8 : 0) | (r ? 4 : 0) | (x ? 2 : 0) | (b ? 1 : 0)
        if v != 0x40 || force { bytes.append(v) }
    }

    /// ModRM (+SIB, +disp) for [base + disp] with `reg` in the reg field.
    private func memOperand(reg: UInt8, base: Reg, disp: Int32) {
        let needsSIB = base.low == 4                  // rsp, r12
        let mod: UInt8
        if disp == 0 && base.low != 5 { mod = 0 }     // rbp, r13 always need a displacement
        else if disp >= -128 && disp <= 127 { mod = 1 }
        else { mod = 2 }
        bytes.append(mod << 6 | (reg & 7) << 3 | (needsSIB ? 4 : base.low))
        if needsSIB { bytes.append(0x24) }
        if mod == 1 { bytes.append(UInt8(bitPattern: Int8(disp))) }
        if mod == 2 { u32(UInt32(bitPattern: disp)) }
    }

    private func rel32(to target: UInt64) {
        let end = pc &+ 4
        guard Self.reachable(from: end, to: target) else {
            pendingError = pendingError ?? .outOfRange(from: end, to: target)
            u32(0)
            return
        }
        u32(UInt32(truncatingIfNeeded: target &- end))
    }

    private func rel32(to label: Label) {
        fixups.append((at: bytes.count, label: label, end: bytes.count + 4))
        u32(0)
    }

    // MARK: - moves

    /// mov dst, src (64-bit)
    public func mov(_ dst: Reg, _ src: Reg) {
        rex(w: true, r: src.ext, b: dst.ext); u8(0x89); u8(0xC0 | src.low << 3 | dst.low)
    }

    /// mov dst, imm64 (the short form when the value fits in 32 bits unsigned)
    public func mov(_ dst: Reg, imm: UInt64) {
        if imm <= UInt64(UInt32.max) {
            rex(w: false, b: dst.ext); u8(0xB8 + dst.low); u32(UInt32(imm))
        } else {
            rex(w: true, b: dst.ext); u8(0xB8 + dst.low); u64(imm)
        }
    }

    /// mov qword [base + disp], src
    public func store(_ src: Reg, _ base: Reg, _ disp: Int32) {
        rex(w: true, r: src.ext, b: base.ext); u8(0x89); memOperand(reg: src.low, base: base, disp: disp)
    }

    /// mov dst, qword [base + disp]
    public func load(_ dst: Reg, _ base: Reg, _ disp: Int32) {
        rex(w: true, r: dst.ext, b: base.ext); u8(0x8B); memOperand(reg: dst.low, base: base, disp: disp)
    }

    /// mov qword [base + disp], simm32
    public func storeImm(_ imm: Int32, _ base: Reg, _ disp: Int32) {
        rex(w: true, b: base.ext); u8(0xC7); memOperand(reg: 0, base: base, disp: disp); u32(UInt32(bitPattern: imm))
    }

    /// lea dst, [base + disp] — also the flag-preserving way to move rsp.
    public func lea(_ dst: Reg, _ base: Reg, _ disp: Int32) {
        rex(w: true, r: dst.ext, b: base.ext); u8(0x8D); memOperand(reg: dst.low, base: base, disp: disp)
    }

    /// movdqu xmmN, [base + disp]
    public func loadXmm(_ xmm: UInt8, _ base: Reg, _ disp: Int32) {
        u8(0xF3); rex(w: false, r: xmm >= 8, b: base.ext); u8(0x0F); u8(0x6F); memOperand(reg: xmm & 7, base: base, disp: disp)
    }

    /// movdqu [base + disp], xmmN
    public func storeXmm(_ xmm: UInt8, _ base: Reg, _ disp: Int32) {
        u8(0xF3); rex(w: false, r: xmm >= 8, b: base.ext); u8(0x0F); u8(0x7F); memOperand(reg: xmm & 7, base: base, disp: disp)
    }

    /// mov dst, qword fs:[0] — the thread pointer (x86-64 TLS ABI: it points to itself).
    public func loadThreadPointer(_ dst: Reg) {
        u8(0x64); rex(w: true, r: dst.ext); u8(0x8B); u8(0x04 | dst.low << 3); u8(0x25); u32(0)
    }

    /// mov eax, dword fs:[disp] — a 32-bit thread-local load (rax is zero-extended).
    public func loadFS32(eax disp: Int32) {
        u8(0x64); u8(0x8B); u8(0x04); u8(0x25); u32(UInt32(bitPattern: disp))
    }

    /// cmp eax, imm32
    public func cmpEAX(_ imm: UInt32) { u8(0x3D); u32(imm) }

    /// xor eax, eax
    public func zeroEAX() { raw([0x31, 0xC0]) }

    /// shl rax, imm8
    public func shlRAX(_ n: UInt8) { raw([0x48, 0xC1, 0xE0, n]) }

    /// lock inc qword [base + index]
    public func lockInc(_ base: Reg, index: Reg) {
        u8(0xF0); rex(w: true, x: index.ext, b: base.ext); u8(0xFF); sib(reg: 0, base: base, index: index)
    }

    /// lock dec qword [base + index]
    public func lockDec(_ base: Reg, index: Reg) {
        u8(0xF0); rex(w: true, x: index.ext, b: base.ext); u8(0xFF); sib(reg: 1, base: base, index: index)
    }

    /// ModRM + SIB for [base + index*1] (no displacement; rbp/r13 bases get a zero disp8).
    private func sib(reg: UInt8, base: Reg, index: Reg) {
        let needsDisp = base.low == 5
        u8((needsDisp ? 0x44 : 0x04) | (reg & 7) << 3)
        u8(index.low << 3 | base.low)
        if needsDisp { u8(0) }
    }

    /// and rsp, simm8 (aligns the stack down: -64 for an XSAVE area)
    public func alignRSP(_ imm: Int8) { raw([0x48, 0x83, 0xE4, UInt8(bitPattern: imm)]) }

    /// xsave64 / xsavec64 [rsp] with the mask in edx:eax.
    public func xsave(compacted: Bool) { compacted ? raw([0x48, 0x0F, 0xC7, 0x24, 0x24]) : raw([0x48, 0x0F, 0xAE, 0x24, 0x24]) }

    /// xrstor64 [rsp] with the mask in edx:eax (it reads either form).
    public func xrstor() { raw([0x48, 0x0F, 0xAE, 0x2C, 0x24]) }

    // MARK: - stack

    public func push(_ r: Reg) { rex(w: false, b: r.ext); u8(0x50 + r.low) }
    public func pop(_ r: Reg) { rex(w: false, b: r.ext); u8(0x58 + r.low) }
    public func pushfq() { u8(0x9C) }
    public func popfq() { u8(0x9D) }
    public func leave() { u8(0xC9) }
    public func ret() { u8(0xC3) }

    // MARK: - arithmetic and atomics

    /// test a, b (64-bit)
    public func test(_ a: Reg, _ b: Reg) { rex(w: true, r: b.ext, b: a.ext); u8(0x85); u8(0xC0 | b.low << 3 | a.low) }

    /// add dst, src (64-bit)
    public func add(_ dst: Reg, _ src: Reg) { rex(w: true, r: src.ext, b: dst.ext); u8(0x01); u8(0xC0 | src.low << 3 | dst.low) }

    /// sub dst, src (64-bit)
    public func sub(_ dst: Reg, _ src: Reg) { rex(w: true, r: src.ext, b: dst.ext); u8(0x29); u8(0xC0 | src.low << 3 | dst.low) }

    /// cmp a, b (64-bit)
    public func cmp(_ a: Reg, _ b: Reg) { rex(w: true, r: b.ext, b: a.ext); u8(0x39); u8(0xC0 | b.low << 3 | a.low) }

    /// or dst, imm32 (64-bit, the immediate sign-extended)
    public func or(_ dst: Reg, imm: Int32) { rex(w: true, b: dst.ext); u8(0x81); u8(0xC8 | dst.low); u32(UInt32(bitPattern: imm)) }

    /// and dst, imm32 (64-bit, the immediate sign-extended)
    public func and(_ dst: Reg, imm: Int32) { rex(w: true, b: dst.ext); u8(0x81); u8(0xE0 | dst.low); u32(UInt32(bitPattern: imm)) }

    /// lock inc qword [base + disp]
    public func lockInc(_ base: Reg, _ disp: Int32) { u8(0xF0); rex(w: true, b: base.ext); u8(0xFF); memOperand(reg: 0, base: base, disp: disp) }

    /// lock dec qword [base + disp]
    public func lockDec(_ base: Reg, _ disp: Int32) { u8(0xF0); rex(w: true, b: base.ext); u8(0xFF); memOperand(reg: 1, base: base, disp: disp) }

    /// lock add qword [base + disp], src
    public func lockAdd(_ base: Reg, _ disp: Int32, _ src: Reg) {
        u8(0xF0); rex(w: true, r: src.ext, b: base.ext); u8(0x01); memOperand(reg: src.low, base: base, disp: disp)
    }

    /// lock cmpxchg qword [base + disp], src (compares with rax)
    public func lockCmpxchg(_ base: Reg, _ disp: Int32, _ src: Reg) {
        u8(0xF0); rex(w: true, r: src.ext, b: base.ext); u8(0x0F); u8(0xB1); memOperand(reg: src.low, base: base, disp: disp)
    }

    /// cmp qword [base + disp], simm8
    public func cmpImm8(_ base: Reg, _ disp: Int32, _ imm: Int8) {
        rex(w: true, b: base.ext); u8(0x83); memOperand(reg: 7, base: base, disp: disp); u8(UInt8(bitPattern: imm))
    }

    /// rdtsc; shl rdx, 32; or rax, rdx — the 64-bit time stamp counter in rax (clobbers rdx).
    public func rdtsc64() { raw([0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0]) }

    /// rep movsq (rcx qwords from [rsi] to [rdi])
    public func repMovsq() { raw([0xF3, 0x48, 0xA5]) }

    // MARK: - control flow

    public func call(_ target: UInt64) { u8(0xE8); rel32(to: target) }
    public func call(_ label: Label) { u8(0xE8); rel32(to: label) }
    /// call reg
    public func call(_ r: Reg) { rex(w: false, b: r.ext); u8(0xFF); u8(0xD0 | r.low) }
    /// call qword [rip + label]
    public func callIndirect(_ slot: Label) { u8(0xFF); u8(0x15); rel32(to: slot) }

    public func jmp(_ target: UInt64) { u8(0xE9); rel32(to: target) }
    public func jmp(_ label: Label) { u8(0xE9); rel32(to: label) }
    /// jmp reg
    public func jmp(_ r: Reg) { rex(w: false, b: r.ext); u8(0xFF); u8(0xE0 | r.low) }
    /// jmp qword [rip + label]
    public func jmpIndirect(_ slot: Label) { u8(0xFF); u8(0x25); rel32(to: slot) }

    /// jmp to any address: rel32 when it reaches, else `jmp [rip+0]` followed by the address.
    public func jmpFar(_ target: UInt64) {
        if Self.reachable(from: pc &+ 5, to: target) { jmp(target); return }
        raw([0xFF, 0x25, 0, 0, 0, 0]); u64(target)
    }

    /// call any address: rel32 when it reaches, else through an inline address slot.
    public func callFar(_ target: UInt64) {
        if Self.reachable(from: pc &+ 5, to: target) { call(target); return }
        let slot = newLabel()
        callIndirect(slot)
        u8(0xEB); u8(8)                             // jmp over the slot
        bind(slot); u64(target)
    }

    public func jcc(_ c: Cond, _ target: UInt64) { u8(0x0F); u8(0x80 + c.rawValue); rel32(to: target) }
    public func jcc(_ c: Cond, _ label: Label) { u8(0x0F); u8(0x80 + c.rawValue); rel32(to: label) }

    public func int3() { u8(0xCC) }
    public func nop() { u8(0x90) }

    /// Pads with int3 up to a multiple of `n` bytes from the base.
    public func align(_ n: Int) { while bytes.count % n != 0 { int3() } }

    /// Pads with int3 until the next byte's absolute address is a multiple of `n`.
    public func alignAbsolute(_ n: UInt64) { while pc % n != 0 { int3() } }

    /// 8 bytes: the absolute address of `label`, or `label` minus `minus` when given.
    public func quad(_ label: Label, minus: Label? = nil) {
        dataFixups.append((at: bytes.count, label: label, minus: minus))
        u64(0)
    }

    /// lea dst, [rip + label]
    public func leaRIP(_ dst: Reg, _ label: Label) {
        rex(w: true, r: dst.ext); u8(0x8D); u8(0x05 | dst.low << 3); rel32(to: label)
    }

    /// mov qword fs:[disp], src
    public func storeFS(_ src: Reg, _ disp: Int32) {
        u8(0x64); rex(w: true, r: src.ext); u8(0x89); u8(0x04 | src.low << 3); u8(0x25); u32(UInt32(bitPattern: disp))
    }

    /// mov qword fs:[disp], 0
    public func clearFS(_ disp: Int32) {
        u8(0x64); rex(w: true); u8(0xC7); u8(0x04); u8(0x25); u32(UInt32(bitPattern: disp)); u32(0)
    }

    /// inc qword [base + index] / dec qword [...] without lock: only inside an rseq critical
    /// section, where no other thread can touch the same per-CPU cell.
    public func inc(_ base: Reg, index: Reg) { rex(w: true, x: index.ext, b: base.ext); u8(0xFF); sib(reg: 0, base: base, index: index) }
    public func dec(_ base: Reg, index: Reg) { rex(w: true, x: index.ext, b: base.ext); u8(0xFF); sib(reg: 1, base: base, index: index) }
}
