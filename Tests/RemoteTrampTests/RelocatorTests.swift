import CPtrace
import Glibc
import TestSupport
import XCTest
@testable import RemoteTramp

/// The prologue relocator, on real code assembled by GNU as: what it emits, what the emitted
/// code computes when run in this process, and what it refuses.
final class RelocatorTests: XCTestCase {

    // MARK: - helpers

    /// Assembled Intel-syntax source: the .text bytes and each `.size`d symbol's range.
    struct Snippet {
        let bytes: [UInt8]
        let symbols: [String: Range<Int>]
        func function(_ name: String) -> [UInt8] { Array(bytes[symbols[name]!]) }
        /// The bytes after `name` to the end of the snippet.
        func trailing(_ name: String) -> [UInt8] { Array(bytes[symbols[name]!.upperBound...]) }
    }

    private func assembleSnippet(_ source: String) throws -> Snippet {
        let dir = "/tmp/hookit-reloc-as-\(getpid())"
        mkdir(dir, 0o755)
        FileManagerLite.write(".intel_syntax noprefix\n.text\n" + source + "\n", to: "\(dir)/a.s")
        let a = runProgram(["/usr/bin/as", "-o", "\(dir)/a.o", "\(dir)/a.s"])
        XCTAssertEqual(a.status, 0, a.stderr)
        let c = runProgram(["/usr/bin/objcopy", "-O", "binary", "-j", ".text", "\(dir)/a.o", "\(dir)/a.bin"])
        XCTAssertEqual(c.status, 0, c.stderr)
        let n = runProgram(["/usr/bin/nm", "-S", "--defined-only", "\(dir)/a.o"])
        XCTAssertEqual(n.status, 0, n.stderr)
        var symbols: [String: Range<Int>] = [:]
        for line in n.output.split(separator: "\n") {
            // "offset size type name", or "offset type name" for a plain label
            let f = line.split(separator: " ")
            guard f.count >= 3, let off = Int(f[0], radix: 16) else { continue }
            let size = f.count == 4 ? Int(f[1], radix: 16) ?? 0 : 0
            symbols[String(f[f.count - 1])] = off..<off + size
        }
        return Snippet(bytes: FileManagerLite.read("\(dir)/a.bin"), symbols: symbols)
    }

    /// One function in `.size`d form.
    private func fn(_ name: String, _ body: String) -> String {
        ".type \(name),@function\n\(name):\n\(body)\n.size \(name), .-\(name)\n"
    }

    /// Decodes `code` as it would run at `base`: (offset, text, decoded) per instruction.
    private func disassemble(_ code: [UInt8], at base: UInt64) -> [(offset: Int, text: String, info: hk_insn)] {
        var out: [(Int, String, hk_insn)] = []
        var at = 0
        while at < code.count {
            var info = hk_insn()
            let rc = code.withUnsafeBufferPointer { hk_decode_insn($0.baseAddress! + at, code.count - at, base + UInt64(at), &info) }
            guard rc == 0 else { XCTFail("undecodable relocated code at +\(at)"); break }
            let text = withUnsafeBytes(of: info.text) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            out.append((at, text, info))
            at += Int(info.length)
        }
        return out
    }

    private func expectRefusal(_ expected: RelocationError, function: [UInt8], trailing: [UInt8] = [],
                               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Relocator.relocate(function: function, trailing: trailing,
                                                    address: 0x40_1000, destination: 0x50_0000),
                             file: file, line: line) { error in
            XCTAssertEqual(error as? RelocationError, expected, "\(error)", file: file, line: line)
        }
    }

    /// Two adjacent pages of executable memory: the snippet on the first, the relocated code
    /// of one of its functions on the second, so rel32 reaches everything.
    final class ExecutablePages {
        let base: UnsafeMutableRawPointer
        let size = 2 * 4096
        var address: UInt64 { UInt64(UInt(bitPattern: base)) }
        var destination: UInt64 { address + 4096 }

        init(snippet: [UInt8]) throws {
            guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                  p != MAP_FAILED else { throw XCTSkip("mmap failed") }
            base = p
            precondition(snippet.count <= 4096)
            memset(base, 0xCC, size)
            snippet.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }

        func install(_ code: [UInt8]) {
            code.withUnsafeBytes { (base + 4096).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            XCTAssertEqual(mprotect(base, size, PROT_READ | PROT_EXEC), 0)
        }

        func function(at address: UInt64) -> @convention(c) (Int, Int) -> Int {
            unsafeBitCast(UnsafeRawPointer(bitPattern: UInt(address))!, to: (@convention(c) (Int, Int) -> Int).self)
        }

        deinit { munmap(base, size) }
    }

    /// Relocates `name` from `snippet`, runs the original and the relocated copy on each pair
    /// of arguments, and checks they agree. Returns the relocation for further checks.
    @discardableResult
    private func runRelocated(_ snippet: Snippet, _ name: String, args: [(Int, Int)],
                              file: StaticString = #filePath, line: UInt = #line) throws -> RelocatedPrologue {
        let pages = try ExecutablePages(snippet: snippet.bytes)
        let entry = pages.address + UInt64(snippet.symbols[name]!.lowerBound)
        let r = try Relocator.relocate(function: snippet.function(name), trailing: snippet.trailing(name),
                                       address: entry, destination: pages.destination)
        pages.install(r.code)
        let original = pages.function(at: entry)
        // The relocated code replaces the bytes from patchOffset: an endbr64 before it has
        // already run (it does nothing) when control reaches the image.
        let relocated = pages.function(at: pages.destination)
        for (a, b) in args {
            XCTAssertEqual(relocated(a, b), original(a, b), "\(name)(\(a), \(b))", file: file, line: line)
        }
        return r
    }

    // MARK: - what is emitted

    func testPlainPrologueIsCopiedAndJumpsBack() throws {
        let s = try assembleSnippet(fn("f", """
            push rbp
            mov rbp, rsp
            sub rsp, 16
            lea rax, [rdi+rsi]
            leave
            ret
            """))
        let address: UInt64 = 0x40_1000, destination: UInt64 = 0x40_9000
        let r = try Relocator.relocate(function: s.function("f"), trailing: [], address: address, destination: destination)
        XCTAssertEqual(r.patchOffset, 0)
        XCTAssertEqual(r.displacedLength, 8)                        // 1 + 3 + 4
        XCTAssertEqual(Array(r.code[0..<8]), Array(s.function("f")[0..<8]))
        XCTAssertEqual(r.pcMap.map { $0.original }, [0, 1, 4])
        XCTAssertEqual(r.pcMap.map { $0.relocated }, [0, 1, 4])
        let d = disassemble(r.code, at: destination)
        XCTAssertEqual(d.map { $0.text }, ["push rbp", "mov rbp, rsp", "sub rsp, 0x10", "jmp 0x401008"])
        XCTAssertEqual(r.code.count, 13)
    }

    func testEndbr64StaysFirstAndThePatchGoesAfterIt() throws {
        let s = try assembleSnippet(fn("f", """
            endbr64
            push rbp
            mov rbp, rsp
            lea rax, [rdi+rsi*2]
            pop rbp
            ret
            """))
        let r = try Relocator.relocate(function: s.function("f"), trailing: [], address: 0x40_1000, destination: 0x40_9000)
        XCTAssertEqual(r.patchOffset, 4)
        XCTAssertEqual(r.displacedLength, 8)                        // push, mov, lea
        XCTAssertEqual(disassemble(r.code, at: 0x40_9000).map { $0.text },
                       ["push rbp", "mov rbp, rsp", "lea rax, [rdi+rsi*2]", "jmp 0x40100c"])
        XCTAssertEqual(r.pcMap.map { $0.original }, [0, 1, 4])
    }

    func testRipRelativeOperandsKeepTheirAbsoluteTarget() throws {
        let s = try assembleSnippet(
            fn("load", "mov rax, qword ptr [rip+value]\nadd rax, rdi\nret")
            + fn("compare", "cmp byte ptr [rip+flag], 0\nmov eax, 1\nret")
            + fn("address", "lea rax, [rip+value]\nret")
            + ".p2align 4\nvalue: .quad 1000\nflag: .byte 0\n")
        for name in ["load", "compare", "address"] {
            let address = 0x40_1000 + UInt64(s.symbols[name]!.lowerBound)
            let destination: UInt64 = 0x7000_0000              // ~1.7 GiB away: still rel32
            let r = try Relocator.relocate(function: s.function(name), trailing: s.trailing(name),
                                           address: address, destination: destination)
            let d = disassemble(r.code, at: destination)
            XCTAssertEqual(d[0].info.rip_relative, 1, name)
            let data = s.symbols[name == "compare" ? "flag" : "value"]!.lowerBound
            XCTAssertEqual(d[0].info.rip_target, 0x40_1000 + UInt64(data), name)
            XCTAssertEqual(Array(r.code[0..<2]), Array(s.function(name)[0..<2]), name)   // same opcode
        }
    }

    func testShortJccAndJmpAndCallBecomeRel32ToTheSameTarget() throws {
        let s = try assembleSnippet(
            fn("jcc", "test rdi, rdi\njz 1f\nlea rax, [rdi+rsi]\nret\n1: mov rax, rsi\nret")
            + fn("jmp8", "jmp 1f\nint3\nint3\nint3\n1: lea rax, [rdi+rsi]\nret")
            + fn("callf", "push rbx\ncall helper\nimul rax, rax\npop rbx\nret")
            + fn("helper", "lea rax, [rdi+rsi]\nret"))
        let base: UInt64 = 0x40_1000, destination: UInt64 = 0x40_9000
        func reloc(_ n: String) throws -> (RelocatedPrologue, [(offset: Int, text: String, info: hk_insn)], UInt64) {
            let a = base + UInt64(s.symbols[n]!.lowerBound)
            let r = try Relocator.relocate(function: s.function(n), trailing: s.trailing(n), address: a, destination: destination)
            return (r, disassemble(r.code, at: destination), a)
        }

        let (jr, jd, ja) = try reloc("jcc")
        XCTAssertEqual(jr.displacedLength, 5)                       // test (3) + jz (2)
        XCTAssertEqual(jd[1].info.branch, UInt8(HK_BRANCH_JCC))
        XCTAssertEqual(jd[1].info.rel_size, 4)
        XCTAssertEqual(jd[1].info.branch_target, ja + 10)           // the `1:` label
        XCTAssertEqual(jd[2].info.branch_target, ja + 5)            // and back
        XCTAssertEqual(jr.pcMap.map { $0.relocated }, [0, 3])
        XCTAssertEqual(jr.code.count, 3 + 6 + 5)

        let (mr, md, ma) = try reloc("jmp8")
        XCTAssertEqual(mr.displacedLength, 5)                       // jmp (2) + int3 padding
        XCTAssertEqual(md.count, 1)                                 // no jump back after a jmp
        XCTAssertEqual(md[0].info.branch, UInt8(HK_BRANCH_JMP))
        XCTAssertEqual(md[0].info.rel_size, 4)
        XCTAssertEqual(md[0].info.branch_target, ma + 5)

        let (cr, cd, ca) = try reloc("callf")
        XCTAssertEqual(cr.displacedLength, 6)                       // push (1) + call (5)
        // push rbx; lea rsp,[rsp-8]; mov dword [rsp], lo(ret); mov dword [rsp+4], hi(ret); jmp helper
        XCTAssertEqual(cd[1].text, "lea rsp, [rsp-0x8]")
        XCTAssertEqual(cd[4].info.branch, UInt8(HK_BRANCH_JMP))
        XCTAssertEqual(cd[4].info.branch_target, base + UInt64(s.symbols["helper"]!.lowerBound))
        XCTAssertEqual(Array(cr.code[9..<13]), withUnsafeBytes(of: UInt32(truncatingIfNeeded: ca + 6).littleEndian) { Array($0) },
                       "the pushed return address is the original's")
    }

    func testFarDestinationUsesAbsoluteJumpsAndRefusesRipRelative() throws {
        let s = try assembleSnippet(
            fn("jcc", "test rdi, rdi\njz 1f\nlea rax, [rdi+rsi]\nret\n1: mov rax, rsi\nret")
            + fn("callf", "push rbx\ncall helper\npop rbx\nret")
            + fn("helper", "lea rax, [rdi+rsi]\nret")
            + fn("load", "mov rax, qword ptr [rip+helper]\nret"))
        let base: UInt64 = 0x40_1000, far: UInt64 = 0x1_4000_0000   // 5 GiB away
        let jccAt = base + UInt64(s.symbols["jcc"]!.lowerBound)
        let j = try Relocator.relocate(function: s.function("jcc"), trailing: [], address: jccAt, destination: far)
        let jd = disassemble(Array(j.code[0..<15]), at: far)     // the instructions before the address slot
        // test; jnz skip; jmp [rip+0]; .quad target; skip: jmp [rip+0]; .quad back
        XCTAssertEqual(jd[1].text, "jnz 0x\(String(far + 3 + 6 + 14, radix: 16))")
        XCTAssertEqual(jd[2].text, "jmp [rip]")
        XCTAssertEqual(disassemble(Array(j.code[23..<29]), at: far + 23)[0].text, "jmp [rip]")
        XCTAssertEqual(Array(j.code[29..<37]), withUnsafeBytes(of: (jccAt + 5).littleEndian) { Array($0) })
        XCTAssertEqual(Array(j.code[15..<23]), withUnsafeBytes(of: (jccAt + 10).littleEndian) { Array($0) })

        let callAt = base + UInt64(s.symbols["callf"]!.lowerBound)
        let c = try Relocator.relocate(function: s.function("callf"), trailing: [], address: callAt, destination: far)
        // The displaced call becomes "push the original return address; jump": the callee returns
        // into the original function, never into the relocated copy.
        let ret = callAt + 6
        let lo = withUnsafeBytes(of: UInt32(truncatingIfNeeded: ret).littleEndian) { Array($0) }
        let hi = withUnsafeBytes(of: UInt32(truncatingIfNeeded: ret >> 32).littleEndian) { Array($0) }
        XCTAssertEqual(Array(c.code[0..<1]), [0x53])                                  // push rbx
        XCTAssertEqual(Array(c.code[1..<6]), [0x48, 0x8D, 0x64, 0x24, 0xF8])          // lea rsp, [rsp-8]
        XCTAssertEqual(Array(c.code[6..<13]), [0xC7, 0x04, 0x24] + lo)
        XCTAssertEqual(Array(c.code[13..<21]), [0xC7, 0x44, 0x24, 0x04] + hi)
        XCTAssertEqual(disassemble(Array(c.code[21..<27]), at: far + 21)[0].text, "jmp [rip]")
        XCTAssertFalse(disassemble(Array(c.code[0..<27]), at: far).contains { $0.info.branch == UInt8(HK_BRANCH_CALL) }, "no call left")

        let loadAt = base + UInt64(s.symbols["load"]!.lowerBound)
        XCTAssertThrowsError(try Relocator.relocate(function: s.function("load"), trailing: [], address: loadAt, destination: far)) {
            guard case .ripTargetOutOfReach(0, _, let target)? = $0 as? RelocationError else { return XCTFail("\($0)") }
            XCTAssertEqual(target, base + UInt64(s.symbols["helper"]!.lowerBound))
        }
    }

    // MARK: - relocated code computes what the original does

    func testRelocatedRipRelativeCodeRuns() throws {
        let s = try assembleSnippet(
            fn("load", "mov rax, qword ptr [rip+value]\nadd rax, rdi\nadd rax, rsi\nret")
            + fn("compare", "cmp byte ptr [rip+flag], 0\njne 1f\nlea rax, [rdi+rsi]\nret\n1: mov rax, rdi\nret")
            + fn("address", "lea rax, [rip+value]\nmov rax, [rax]\nsub rax, rsi\nret")
            + ".p2align 4\nvalue: .quad 1000\nflag: .byte 1\n")
        let args = [(0, 0), (1, 2), (-5, 7), (123_456, -1)]
        for name in ["load", "compare", "address"] { try runRelocated(s, name, args: args) }
    }

    func testRelocatedJccFirstRuns() throws {
        let s = try assembleSnippet(fn("jcc", "test rdi, rdi\njz 1f\nlea rax, [rdi+rsi]\nret\n1: mov rax, rsi\nneg rax\nret"))
        try runRelocated(s, "jcc", args: [(0, 5), (3, 4), (-1, 1)])
    }

    func testRelocatedJmpFirstRuns() throws {
        let s = try assembleSnippet(fn("f", "jmp 1f\nint3\nint3\nint3\n1: lea rax, [rdi+rsi]\nret"))
        try runRelocated(s, "f", args: [(2, 3)])
    }

    func testRelocatedCallFirstRuns() throws {
        let s = try assembleSnippet(
            fn("callf", "push rbx\ncall helper\nimul rax, rax\npop rbx\nret")
            + fn("helper", "lea rax, [rdi+rsi]\nret"))
        try runRelocated(s, "callf", args: [(1, 2), (-3, 0), (1000, 24)])
    }

    func testRelocatedEndbr64FunctionRuns() throws {
        let s = try assembleSnippet(fn("f", "endbr64\npush rbp\nmov rbp, rsp\nlea rax, [rdi+rsi*2]\npop rbp\nret"))
        let r = try runRelocated(s, "f", args: [(1, 2), (7, -3)])
        XCTAssertEqual(r.patchOffset, 4)
    }

    func testRelocatedJrcxzIsWidenedAndRuns() throws {
        let s = try assembleSnippet(fn("f", "mov rcx, rdi\njrcxz 1f\nlea rax, [rdi+rsi]\nret\n1: mov rax, rsi\nret"))
        let r = try runRelocated(s, "f", args: [(0, 9), (4, 9)])
        XCTAssertEqual(r.displacedLength, 5)
        // mov rcx, rdi ; jrcxz taken ; jmp skip ; taken: jmp +10 ; skip: jmp back to +5
        let f = try Relocator.relocate(function: s.function("f"), trailing: [], address: 0x40_1000, destination: 0x40_9000)
        XCTAssertEqual(disassemble(f.code, at: 0x40_9000).map { $0.text },
                       ["mov rcx, rdi", "jrcxz 0x40900a", "jmp 0x40900f", "jmp 0x40100a", "jmp 0x401005"])
    }

    func testBranchBetweenDisplacedInstructionsStaysInTheCopy() throws {
        let s = try assembleSnippet(fn("f", "test edi, edi\njz 1f\n1: mov eax, esi\nadd eax, edi\nret"))
        let r = try runRelocated(s, "f", args: [(0, 9), (4, 9)])
        XCTAssertEqual(r.displacedLength, 6)
        let d = disassemble(r.code, at: 0x1000)
        XCTAssertEqual(d[1].info.branch_target, 0x1000 + UInt64(d[2].offset))
    }

    func testTooShortFunctionFollowedByPaddingRuns() throws {
        let s = try assembleSnippet(fn("f", "lea eax, [rdi+rsi]\nret") + "int3\nint3\nint3\nint3\n")
        let r = try runRelocated(s, "f", args: [(1, 2)])
        XCTAssertEqual(r.displacedLength, 5)
        XCTAssertEqual(r.code, [0x8D, 0x04, 0x37, 0xC3])            // the padding is not copied
    }

    // MARK: - refusals

    func testRefusesTooShortFunctionFollowedByCode() throws {
        let s = try assembleSnippet(fn("f", "lea eax, [rdi+rsi]\nret") + fn("g", "push rbp\nmov rbp, rsp\nret"))
        expectRefusal(.tooShort(size: 4, needed: 5), function: s.function("f"), trailing: s.trailing("f"))
        XCTAssertEqual(RelocationError.tooShort(size: 4, needed: 5).description,
                       "function is 4 bytes, the patch needs 5, and the bytes after it are not padding")
    }

    func testRefusesBranchBackIntoTheDisplacedBytes() throws {
        let s = try assembleSnippet(fn("f", "lea eax, [rdi+rsi]\n1: add eax, eax\ndec esi\njnz 1b\nret"))
        XCTAssertEqual(s.function("f")[3], 0x01)                    // `1:` is at +3
        expectRefusal(.branchIntoPatch(offset: 7, instruction: "jnz 0x401003"), function: s.function("f"))
        XCTAssertEqual(RelocationError.branchIntoPatch(offset: 7, instruction: "jnz 0x401003").description,
                       "branch at +0x7 (jnz 0x401003) goes back into the displaced bytes")
    }

    func testAllowsRecursiveCallToTheEntry() throws {
        let s = try assembleSnippet(fn("f", "push rbx\nmov rbx, rdi\ntest rdi, rdi\njz 1f\nlea rdi, [rdi-1]\ncall f\nadd rax, rbx\n1: pop rbx\nret"))
        XCTAssertNoThrow(try Relocator.relocate(function: s.function("f"), trailing: [], address: 0x40_1000, destination: 0x50_0000))
    }

    func testRefusesUndecodableBytes() {
        expectRefusal(.undecodable(offset: 0, bytes: [0x06, 0x90, 0x90, 0x90, 0x90, 0xC3]),
                      function: [0x06, 0x90, 0x90, 0x90, 0x90, 0xC3])
        XCTAssertEqual(RelocationError.undecodable(offset: 0, bytes: [0x06, 0x90]).description,
                       "cannot decode the instruction at +0x0 (bytes 06 90)")
    }

    func testRefusesRetBeforeThePatchIsCovered() throws {
        let s = try assembleSnippet(fn("f", "xor eax, eax\nret\nmov eax, 1\nret"))
        expectRefusal(.endsBeforePatch(offset: 2, instruction: "ret"), function: s.function("f"))
        XCTAssertEqual(RelocationError.endsBeforePatch(offset: 2, instruction: "ret").description,
                       "+0x2 (ret) ends the function within the 5 bytes the patch needs, and the bytes after it are not padding")
    }

    func testRefusesInstructionRunningPastTheFunctionEnd() {
        // mov eax, imm32 (5 bytes) with a symbol size of 3.
        expectRefusal(.crossesFunctionEnd(offset: 0, instruction: "mov eax, 0x1"),
                      function: [0xB8, 0x01, 0x00], trailing: [0x00, 0x00, 0xC3])
    }

    func testRefusesXbeginInTheDisplacedBytes() {
        // xbegin rel32 (6 bytes): its fallback address is relative and has no other form.
        let f: [UInt8] = [0xC7, 0xF8, 0x10, 0, 0, 0, 0xC3] + Array(repeating: 0x90, count: 16) + [0xC3]
        XCTAssertThrowsError(try Relocator.relocate(function: f, trailing: [], address: 0x40_1000, destination: 0x50_0000)) {
            guard case .unrelocatable(0, "xbegin 0x401016", _)? = $0 as? RelocationError else { return XCTFail("\($0)") }
        }
    }
}
