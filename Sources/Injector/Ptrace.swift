import CPtrace
import Glibc

/// One thin typed wrapper per ptrace request used by Injector; each throws
/// `InjectorError.ptraceFailed` naming the request, the thread and the errno (a caller that
/// expects one, ESRCH for a thread that is gone, catches it by `ptraceErrno`). The raw calls
/// live here only.
enum Ptrace {
    private static func check(_ rc: Int, _ request: String, _ tid: pid_t) throws {
        if rc == -1 { throw InjectorError.ptraceFailed(request: request, tid: tid, errno: errno) }
    }

    /// Runs a request whose failure with one of `expected` the caller handles: returns that
    /// errno, or 0 on success; any other failure is thrown.
    @discardableResult
    static func tolerating(_ expected: Set<Int32>, _ request: () throws -> Void) throws -> Int32 {
        do { try request() } catch InjectorError.ptraceFailed(_, _, let e) where expected.contains(e) { return e }
        return 0
    }

    static let seizeOptions = UInt64(HK_PTRACE_O_TRACECLONE | HK_PTRACE_O_TRACESYSGOOD | HK_PTRACE_O_TRACEEXEC)

    /// The ptrace request is PTRACE_SEIZE, with the options hookit always uses. Deliberately
    /// without PTRACE_O_EXITKILL: if hookit dies, the tracee must live on (design.md invariant 4).
    static func seize(_ tid: pid_t, extra: UInt64 = 0) throws {
        try check(hk_ptrace(Int32(HK_PTRACE_SEIZE), tid, 0, seizeOptions | extra), "PTRACE_SEIZE", tid)
    }

    /// PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK (<linux/ptrace.h>): the kernel attaches a child
    /// the tracee forks and reports PTRACE_EVENT_FORK / PTRACE_EVENT_VFORK (1, 2) in the parent.
    static let forkOptions: UInt64 = 0x2 | 0x4
    static let eventFork: Int32 = 1
    static let eventVfork: Int32 = 2

    /// The ptrace request is PTRACE_SEIZE with `seizeOptions` plus PTRACE_O_EXITKILL: for a program
    /// hookit starts itself, killed with hookit until it reaches main (see Spawn.swift).
    static func seizeKillingOnExit(_ tid: pid_t) throws {
        try check(hk_ptrace(Int32(HK_PTRACE_SEIZE), tid, 0, seizeOptions | UInt64(HK_PTRACE_O_EXITKILL)), "PTRACE_SEIZE", tid)
    }

    /// The ptrace request is PTRACE_SETOPTIONS, back to `seizeOptions` (drops PTRACE_O_EXITKILL).
    static func resetOptions(_ tid: pid_t, extra: UInt64 = 0) throws {
        try check(hk_ptrace(Int32(HK_PTRACE_SETOPTIONS), tid, 0, seizeOptions | extra), "PTRACE_SETOPTIONS", tid)
    }

    /// The ptrace request is PTRACE_INTERRUPT.
    static func interrupt(_ tid: pid_t) throws {
        try check(hk_ptrace(Int32(HK_PTRACE_INTERRUPT), tid, 0, 0), "PTRACE_INTERRUPT", tid)
    }

    /// The ptrace request is PTRACE_CONT, delivering `signal` (0 for none).
    static func cont(_ tid: pid_t, signal: Int32 = 0) throws {
        try check(hk_ptrace(Int32(HK_PTRACE_CONT), tid, 0, UInt64(signal)), "PTRACE_CONT", tid)
    }

    /// The ptrace request is PTRACE_SYSCALL: resume until the next syscall entry or exit.
    static func syscall(_ tid: pid_t, signal: Int32 = 0) throws {
        try check(hk_ptrace(Int32(HK_PTRACE_SYSCALL), tid, 0, UInt64(signal)), "PTRACE_SYSCALL", tid)
    }

    /// The ptrace request is PTRACE_LISTEN: leave a group-stopped thread stopped, but let it
    /// report SIGCONT and new signals.
    static func listen(_ tid: pid_t) throws {
        try check(hk_ptrace(Int32(HK_PTRACE_LISTEN), tid, 0, 0), "PTRACE_LISTEN", tid)
    }

    /// The ptrace request is PTRACE_DETACH, delivering `signal`.
    static func detach(_ tid: pid_t, signal: Int32 = 0) throws {
        try check(hk_ptrace(Int32(HK_PTRACE_DETACH), tid, 0, UInt64(signal)), "PTRACE_DETACH", tid)
    }

    /// The ptrace request is PTRACE_GETEVENTMSG.
    static func eventMessage(_ tid: pid_t) throws -> UInt64 {
        var msg: UInt64 = 0
        if hk_ptrace(Int32(HK_PTRACE_GETEVENTMSG), tid, 0, UInt64(UInt(bitPattern: withUnsafeMutablePointer(to: &msg) { $0 }))) == -1 {
            throw InjectorError.ptraceFailed(request: "PTRACE_GETEVENTMSG", tid: tid, errno: errno)
        }
        return msg
    }

    /// The ptrace request is PTRACE_GETREGS.
    static func registers(_ tid: pid_t) throws -> user_regs_struct {
        var regs = user_regs_struct()
        let rc = withUnsafeMutablePointer(to: &regs) {
            hk_ptrace(Int32(HK_PTRACE_GETREGS), tid, 0, UInt64(UInt(bitPattern: $0)))
        }
        if rc == -1 { throw InjectorError.ptraceFailed(request: "PTRACE_GETREGS", tid: tid, errno: errno) }
        return regs
    }

    /// The ptrace request is PTRACE_SETREGS.
    static func setRegisters(_ tid: pid_t, _ regs: user_regs_struct) throws {
        var copy = regs
        let rc = withUnsafeMutablePointer(to: &copy) {
            hk_ptrace(Int32(HK_PTRACE_SETREGS), tid, 0, UInt64(UInt(bitPattern: $0)))
        }
        if rc == -1 { throw InjectorError.ptraceFailed(request: "PTRACE_SETREGS", tid: tid, errno: errno) }
    }

    /// The ptrace request is PTRACE_GETREGSET with NT_X86_XSTATE: the whole FP/SSE/AVX state.
    static func extendedState(_ tid: pid_t) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: 16384)
        var len = buf.count
        let rc = buf.withUnsafeMutableBytes { hk_getregset(tid, Int32(HK_NT_X86_XSTATE), $0.baseAddress, &len) }
        if rc == -1 { throw InjectorError.ptraceFailed(request: "PTRACE_GETREGSET(NT_X86_XSTATE)", tid: tid, errno: errno) }
        return Array(buf.prefix(len))
    }

    /// The ptrace request is PTRACE_SETREGSET with NT_X86_XSTATE.
    static func setExtendedState(_ tid: pid_t, _ state: [UInt8]) throws {
        let rc = state.withUnsafeBytes { hk_setregset(tid, Int32(HK_NT_X86_XSTATE), $0.baseAddress, $0.count) }
        if rc == -1 { throw InjectorError.ptraceFailed(request: "PTRACE_SETREGSET(NT_X86_XSTATE)", tid: tid, errno: errno) }
    }
}
