import Glibc
import TestSupport
import XCTest
@testable import RemoteTramp

/// The writer's encodings, checked against GNU as assembling the same instructions.
final class X86WriterTests: XCTestCase {
    /// Assembles Intel-syntax lines with `as` and returns the .text bytes.
    private func gnuAs(_ lines: [String]) throws -> [UInt8] {
        let dir = "/tmp/hookit-as-\(getpid())"
        mkdir(dir, 0o755)
        let src = ".intel_syntax noprefix\n.text\n" + lines.joined(separator: "\n") + "\n"
        FileManagerLite.write(src, to: "\(dir)/a.s")
        let a = runProgram(["/usr/bin/as", "-o", "\(dir)/a.o", "\(dir)/a.s"])
        XCTAssertEqual(a.status, 0, a.stderr)
        let c = runProgram(["/usr/bin/objcopy", "-O", "binary", "-j", ".text", "\(dir)/a.o", "\(dir)/a.bin"])
        XCTAssertEqual(c.status, 0, c.stderr)
        return FileManagerLite.read("\(dir)/a.bin")
    }

    func testEncodingsMatchGNUAs() throws {
        let cases: [(String, (X86Writer) -> Void)] = [
            ("mov rax, rdi", { $0.mov(.rax, .rdi) }),
            ("mov r11, r15", { $0.mov(.r11, .r15) }),
            ("mov rbp, rsp", { $0.mov(.rbp, .rsp) }),
            ("movabs rax, 0x1122334455667788", { $0.mov(.rax, imm: 0x1122_3344_5566_7788) }),
            ("mov r9d, 0x1000", { $0.mov(.r9, imm: 0x1000) }),
            ("mov qword ptr [rsp+8], rdi", { $0.store(.rdi, .rsp, 8) }),
            ("mov qword ptr [rbp-0x200], r9", { $0.store(.r9, .rbp, -0x200) }),
            ("mov qword ptr [r12], rax", { $0.store(.rax, .r12, 0) }),
            ("mov qword ptr [r13+0], rax", { $0.store(.rax, .r13, 0) }),
            ("mov rcx, qword ptr [rsp+0x48]", { $0.load(.rcx, .rsp, 0x48) }),
            ("mov r10, qword ptr [rax+0x100]", { $0.load(.r10, .rax, 0x100) }),
            ("mov qword ptr [rsp+0x40], -1", { $0.storeImm(-1, .rsp, 0x40) }),
            ("lea rsp, [rsp+8]", { $0.lea(.rsp, .rsp, 8) }),
            ("lea rdi, [rbp-0x110]", { $0.lea(.rdi, .rbp, -0x110) }),
            ("movdqu xmmword ptr [rsp+0x60], xmm0", { $0.storeXmm(0, .rsp, 0x60) }),
            ("movdqu xmm7, xmmword ptr [rsp+0xd0]", { $0.loadXmm(7, .rsp, 0xd0) }),
            ("movdqu xmm9, xmmword ptr [r8+0x10]", { $0.loadXmm(9, .r8, 0x10) }),
            ("mov rax, qword ptr fs:0", { $0.loadThreadPointer(.rax) }),
            ("push rbp", { $0.push(.rbp) }), ("push r12", { $0.push(.r12) }),
            ("pop r15", { $0.pop(.r15) }), ("pushfq", { $0.pushfq() }), ("popfq", { $0.popfq() }),
            ("leave", { $0.leave() }), ("ret", { $0.ret() }),
            ("test rax, rax", { $0.test(.rax, .rax) }), ("test r8, rdx", { $0.test(.r8, .rdx) }),
            ("add rax, rdx", { $0.add(.rax, .rdx) }), ("sub r10, rax", { $0.sub(.r10, .rax) }),
            ("cmp rcx, r11", { $0.cmp(.rcx, .r11) }),
            ("lock inc qword ptr [rax+8]", { $0.lockInc(.rax, 8) }),
            ("lock dec qword ptr [r11+0x80]", { $0.lockDec(.r11, 0x80) }),
            ("lock add qword ptr [rax+0x10], rdx", { $0.lockAdd(.rax, 0x10, .rdx) }),
            ("lock cmpxchg qword ptr [rdi+0], rcx", { $0.lockCmpxchg(.rdi, 0, .rcx) }),
            ("cmp qword ptr [rax+0x18], 0", { $0.cmpImm8(.rax, 0x18, 0) }),
            ("rdtsc\nshl rdx, 32\nor rax, rdx", { $0.rdtsc64() }),
            ("rep movsq", { $0.repMovsq() }),
            ("call r11", { $0.call(.r11) }), ("jmp rax", { $0.jmp(.rax) }),
            ("int3", { $0.int3() }),
            ("mov eax, dword ptr fs:0x920", { $0.loadFS32(eax: 0x920) }),
            ("cmp eax, 0x100", { $0.cmpEAX(0x100) }), ("xor eax, eax", { $0.zeroEAX() }),
            ("shl rax, 16", { $0.shlRAX(16) }),
            ("and rsp, -64", { $0.alignRSP(-64) }),
            ("xsave64 [rsp]", { $0.xsave(compacted: false) }), ("xsavec64 [rsp]", { $0.xsave(compacted: true) }),
            ("xrstor64 [rsp]", { $0.xrstor() }),
            ("lock inc qword ptr [r11+rax]", { $0.lockInc(.r11, index: .rax) }),
            ("lock dec qword ptr [r11+rax]", { $0.lockDec(.r11, index: .rax) }),
            ("lock inc qword ptr [r13+rcx]", { $0.lockInc(.r13, index: .rcx) }),
            ("inc qword ptr [r11+rax]", { $0.inc(.r11, index: .rax) }), ("dec qword ptr [r11+rax]", { $0.dec(.r11, index: .rax) }),
            ("mov qword ptr fs:0x928, r11", { $0.storeFS(.r11, 0x928) }),
            ("mov qword ptr fs:0x928, 0", { $0.clearFS(0x928) }),
        ]
        for (text, emit) in cases {
            let w = X86Writer(base: 0x1000)
            emit(w)
            XCTAssertEqual(try w.finish(), try gnuAs(text.split(separator: "\n").map(String.init)), text)
        }
    }

    func testBranchesToAddressesAndLabels() throws {
        let w = X86Writer(base: 0x40_0000)
        let done = w.newLabel()
        w.call(UInt64(0x40_0100))        // e8, rel to 0x400005
        w.jcc(.ne, done)                 // 0f 85
        w.jmp(UInt64(0x3F_0000))
        w.bind(done)
        w.ret()
        let b = try w.finish()
        XCTAssertEqual(Array(b[0..<5]), [0xE8, 0xFB, 0x00, 0x00, 0x00])
        XCTAssertEqual(Array(b[5..<11]), [0x0F, 0x85, 0x05, 0x00, 0x00, 0x00])
        let rel = Int32(bitPattern: UInt32(b[12]) | UInt32(b[13]) << 8 | UInt32(b[14]) << 16 | UInt32(b[15]) << 24)
        XCTAssertEqual(Int64(0x40_0010) + Int64(rel), 0x3F_0000)
        XCTAssertEqual(b.last, 0xC3)
    }

    func testOutOfReachBranchIsAnErrorAndFarFormsReach() throws {
        let w = X86Writer(base: 0x1000)
        w.jmp(UInt64(0x7FFF_0000_0000))
        XCTAssertThrowsError(try w.finish())
        let far = X86Writer(base: 0x1000)
        far.jmpFar(0x7FFF_0000_1234)
        XCTAssertEqual(try far.finish(), [0xFF, 0x25, 0, 0, 0, 0, 0x34, 0x12, 0, 0, 0xFF, 0x7F, 0, 0])
    }
}

/// Small file helpers without Foundation's FileManager.
enum FileManagerLite {
    static func write(_ s: String, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = s.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }

    static func read(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var out = [UInt8](), buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buf[..<n]
        }
        return out
    }
}
