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

    /// Registers hookit can read now: every thread's while the world is stopped; otherwise one
    /// thread's, stopped for the read alone while the others run.
    public func sampleRegisters() throws -> [(tid: pid_t, regs: user_regs_struct)] {
        if held { return try threadIDs.map { ($0, try Ptrace.registers($0)) } }
        let thread = try lendOneThread()
        defer { returnLentThread(thread) }
        return [(thread.tid, try Ptrace.registers(thread.tid))]
    }
}
