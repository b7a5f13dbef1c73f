import CPtrace
import Glibc

/// Bytes of the tracee that hold the remote stub (see CPtrace/remote_stub.c), and what they
/// held before. They are the unused tail of the last page of an executable segment: past the
/// end of the segment's file data, mapped executable but never executed by the program, so
/// writing them is harmless at any moment — even if hookit dies and they are never restored.
struct StubLease {
    var address: UInt64
    var original: [UInt8]
    /// A thread may still execute the stub (a remote call that timed out is finishing on its
    /// own); the bytes must then stay until the process ends.
    var inUse = false

    var syscallEntry: UInt64 { address + UInt64(hk_stub_syscall_offset()) }
    var callEntry: UInt64 { address + UInt64(hk_stub_call_offset()) }
    var sentinelAfter: UInt64 { address + UInt64(hk_stub_sentinel_offset()) }
}

enum StubCode {
    static var bytes: [UInt8] {
        var n = 0
        let p = hk_stub_code(&n)!
        return Array(UnsafeBufferPointer(start: p, count: n))
    }
}

/// The frame the stub expects below the borrowed thread's red zone (layout in remote_stub.c).
struct StubFrame {
    /// R: the saved registers, ending just below the red zone.
    let registers: UInt64
    /// A: the syscall number or function, the six arguments, the result.
    let arguments: UInt64

    static let redZone: UInt64 = 128
    static let savedRegistersSize: UInt64 = 17 * 8
    static let argumentsSize: UInt64 = 8 * 8

    init(originalRSP: UInt64) {
        registers = originalRSP &- Self.redZone &- Self.savedRegistersSize
        arguments = registers &- Self.argumentsSize
    }

    var result: UInt64 { arguments + 56 }

    /// The stub's `pop` order, then rflags and rip.
    static func savedRegisters(_ r: user_regs_struct) -> [UInt64] {
        [r.r15, r.r14, r.r13, r.r12, r.r11, r.r10, r.r9, r.r8, r.rbp, r.rdi, r.rsi, r.rdx, r.rcx, r.rbx, r.rax,
         r.eflags, r.rip]
    }
}

extension Tracee {
    /// Writes the stub into the tracee once per attach, or reuses it.
    func ensureStub() throws -> StubLease {
        if let lease = stubLease { return lease }
        let code = StubCode.bytes
        let modules = try Modules.read(pid: pid, memory: memory)
        // libc first: every dynamically linked tracee has it; then the executable and the rest.
        let ordered = modules.filter { $0.name.hasPrefix("libc.so") } + modules.filter { !$0.name.hasPrefix("libc.so") && !$0.isVDSO }
        for m in ordered {
            for seg in m.programHeaders where seg.isLoad && seg.isExecutable {
                let end = (m.bias &+ seg.vaddr &+ seg.memsz + 15) & ~15
                let pageEnd = (end + 4095) & ~4095
                guard pageEnd - end >= UInt64(code.count),
                      let mapping = m.mappings.first(where: { $0.executable && end >= $0.start && end < $0.end }),
                      pageEnd <= mapping.end else { continue }
                let original = try memory.read(at: end, count: code.count)
                try memory.writeForced(code, at: end)
                let lease = StubLease(address: end, original: original)
                stubLease = lease
                return lease
            }
        }
        throw InjectorError.noStubSpace(pid: pid)
    }

    /// Puts back the bytes the stub borrowed, unless a thread may still run it.
    func restoreStubBytes() throws {
        guard let lease = stubLease, !lease.inUse else { return }
        try memory.writeForced(lease.original, at: lease.address)
        stubLease = nil
    }
}
