import Glibc

/// Register access for layers above Injector (RemoteTramp moves a thread's PC out of bytes it
/// is about to rewrite). Only valid while the world is stopped.
extension Tracee {
    public var threadIDs: [pid_t] { Array(threads.keys).sorted() }

    /// The ptrace request is PTRACE_GETREGS.
    public func registers(of tid: pid_t) throws -> user_regs_struct {
        precondition(held, "registers can be read only while the world is stopped")
        return try Ptrace.registers(tid)
    }

    /// The ptrace request is PTRACE_SETREGS.
    public func setRegisters(_ regs: user_regs_struct, of tid: pid_t) throws {
        precondition(held, "registers can be written only while the world is stopped")
        try Ptrace.setRegisters(tid, regs)
    }
}
