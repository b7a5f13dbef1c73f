import CPtrace
import Glibc

/// Borrowing one stopped thread to run the remote stub, shared by RemoteSyscall and RemoteCall.
///
/// Order of steps (design.md, "A tracer's death"): the frame (saved registers, arguments) and
/// the stub are written first, into memory the program never uses; the one PTRACE_SETREGS that
/// points the thread at the stub comes last. From then on the thread is always in a state that
/// finishes correctly without hookit. When hookit catches it at the stub's sentinel syscall, it
/// puts the saved registers and FP state back itself and skips the sentinel.
extension Tracee {
    enum StubEntry { case syscall, call }

    struct Borrowed {
        let thread: TraceeThread
        let saved: user_regs_struct      // as the kernel would resume it (restart applied)
        let savedFP: [UInt8]
        let frame: StubFrame
        let lease: StubLease
    }

    /// A stopped thread to lend: the leader if possible; never one holding a signal it stopped
    /// for (the signal must be handed back from that very stop) or a group-stopped one.
    func pickThread() throws -> TraceeThread {
        let candidates = threads.values.filter { $0.stopped && $0.pendingSignal == 0 && !$0.groupStopped }
        if let p = preferredLender, let t = candidates.first(where: { $0.tid == p }) { return t }
        if let leader = candidates.first(where: { $0.tid == pid }) { return leader }
        if let any = candidates.min(by: { $0.tid < $1.tid }) { return any }
        if let any = threads.values.first(where: { $0.stopped && !$0.groupStopped }) { return any }
        throw InjectorError.threadDidNotStop(tid: pid, state: "no thread available to run remote code (all group-stopped)")
    }

    /// A thread interrupted inside a blocking syscall reports rax = -ERESTART* with rip past the
    /// `syscall` instruction; the kernel would restart it on resume. Since the thread leaves
    /// hookit's hands through another path, apply that restart now, as the kernel would.
    static func applyingSyscallRestart(_ r: user_regs_struct) -> user_regs_struct {
        var regs = r
        let ret = Int64(bitPattern: r.rax)
        if Int64(bitPattern: r.orig_rax) >= 0 {
            switch ret {
            case -512, -513, -514:            // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
                regs.rax = r.orig_rax
                regs.rip = r.rip &- 2
            case -516:                          // ERESTART_RESTARTBLOCK
                regs.rax = 219                  // __NR_restart_syscall
                regs.rip = r.rip &- 2
            default:
                break
            }
        }
        regs.orig_rax = UInt64.max
        return regs
    }

    /// Writes the frame and points `thread` at the stub. `arguments[0]` is the syscall number or
    /// function address, then up to six arguments.
    func borrow(_ thread: TraceeThread, entry: StubEntry, arguments: [UInt64]) throws -> Borrowed {
        let lease = try ensureStub()
        let original = try Ptrace.registers(thread.tid)
        let savedFP = try Ptrace.extendedState(thread.tid)
        let saved = Self.applyingSyscallRestart(original)
        let frame = StubFrame(originalRSP: saved.rsp)

        var block = [UInt8]()
        var args = arguments
        args += Array(repeating: 0, count: 8 - args.count)     // + result slot
        for v in args { block += [UInt8].of(v) }
        for v in StubFrame.savedRegisters(saved) { block += [UInt8].of(v) }

        var regs = saved
        regs.rbx = frame.arguments
        regs.rip = entry == .syscall ? lease.syscallEntry : lease.callEntry
        if entry == .call {
            // A zeroed, 64-byte aligned XSAVE area; the callee's frames grow below it.
            let xsaveSize = UInt64(max(hk_xsave_size(), 4096))
            let area = (frame.arguments &- xsaveSize) & ~63
            try memory.write([UInt8](repeating: 0, count: Int(frame.arguments - area)), at: area)
            regs.rsp = area
        } else {
            regs.rsp = (frame.arguments &- 64) & ~15
        }
        try memory.write(block, at: frame.arguments)
        thread.borrowed = true
        do {
            try Ptrace.setRegisters(thread.tid, regs)   // the only change to the thread; last
        } catch {
            thread.borrowed = false
            throw error
        }
        return Borrowed(thread: thread, saved: saved, savedFP: savedFP, frame: frame, lease: lease)
    }

    enum StubOutcome { case finished(UInt64), timedOut, interrupted }

    /// Runs the borrowed thread, one syscall stop at a time, until it reaches the sentinel.
    /// Events of other threads are dispatched as usual (held or released per `held`).
    func runUntilSentinel(_ b: Borrowed, timeout: Double) throws -> StubOutcome {
        let tid = b.thread.tid
        let deadline = Clock.now() + UInt64(timeout * 1e9)
        var resumeSignal: Int32 = 0
        while true {
            do { try Ptrace.syscall(tid, signal: resumeSignal) }
            catch InjectorError.ptraceFailed(_, _, let e) { throw InjectorError.remoteThreadDied(tid: tid, detail: "PTRACE_SYSCALL: \(errnoText(e))") }
            b.thread.stopped = false
            resumeSignal = 0
            while true {
                if Interruption.requested { return .interrupted }
                guard let ev = try waitEvent(until: min(deadline, Clock.now() + 50_000_000)) else {
                    if Clock.now() >= deadline { return .timedOut }
                    continue
                }
                if ev.tid != tid {
                    try dispatch(tid: ev.tid, status: ev.status)
                    continue
                }
                if hk_wifstopped(ev.status) == 0 {
                    try dispatch(tid: ev.tid, status: ev.status)
                    throw InjectorError.remoteThreadDied(tid: tid, detail: "exit status \(ev.status)")
                }
                b.thread.stopped = true
                let sig = hk_wstopsig(ev.status)
                let event = hk_wptrace_event(ev.status)
                if sig == (SIGTRAP | 0x80) {
                    let regs = try Ptrace.registers(tid)
                    if regs.rip == b.lease.sentinelAfter && regs.orig_rax == 39 {
                        b.thread.inSyscallStop = true
                        return .finished(try memory.readU64(at: b.frame.result))
                    }
                } else if event == Int32(HK_PTRACE_EVENT_CLONE) {
                    adoptClone(pid_t(truncatingIfNeeded: try Ptrace.eventMessage(tid)))
                } else if event == 0 {
                    if [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP].contains(sig) {
                        // The remote code faulted. Do not deliver: the restore below puts the
                        // thread back as it was, as if the call had never happened.
                        let regs = try Ptrace.registers(tid)
                        try restore(b)
                        throw InjectorError.remoteThreadDied(
                            tid: tid, detail: "signal \(sig) at 0x\(hex(regs.rip)) inside the remote code; thread restored")
                    }
                    resumeSignal = sig
                }
                break
            }
        }
    }

    /// Puts the borrowed thread back exactly: registers (restart applied), FP/SSE/AVX state.
    /// Called at the sentinel's syscall-entry stop, where orig_rax = -1 also skips the sentinel.
    func restore(_ b: Borrowed) throws {
        try Ptrace.setRegisters(b.thread.tid, b.saved)
        try Ptrace.setExtendedState(b.thread.tid, b.savedFP)
        b.thread.borrowed = false
    }

    /// Gives up waiting for a borrowed thread: it keeps running the stub, which restores the
    /// thread by itself when the syscall or call returns. The stub bytes stay in place.
    func abandon(_ b: Borrowed) {
        stubLease?.inUse = true
        let tid = b.thread.tid
        if !b.thread.stopped {
            // Switch it from syscall-stepping to running freely: stop it, then continue it.
            if (try? Ptrace.interrupt(tid)) != nil {
                let deadline = Clock.now() + 1_000_000_000
                while let ev = try? waitEvent(until: deadline) {
                    if ev.tid == tid {
                        if hk_wifstopped(ev.status) != 0 {
                            b.thread.stopped = true
                            let sig = hk_wstopsig(ev.status)
                            if hk_wptrace_event(ev.status) == 0 && sig != (SIGTRAP | 0x80) { b.thread.pendingSignal = sig }
                        } else {
                            threads[tid] = nil
                        }
                        break
                    }
                    try? dispatch(tid: ev.tid, status: ev.status)
                }
            }
        }
        b.thread.borrowed = false
        if !held { try? release(b.thread) }
    }
}
