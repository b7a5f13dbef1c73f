import CPtrace
import Glibc

/// One thread stopped on its own, for a remote syscall or call while every other thread runs.
///
/// Why: design.md invariant 1 allows the world to stop only for the pokes; loading a library,
/// mapping pages or registering unwind information needs one thread, not all of them. The lent
/// thread is marked borrowed before it is interrupted, so `dispatch` keeps its stop instead of
/// releasing it; every other thread's events are serviced as usual meanwhile.
extension Tracee {
    /// Interrupts one thread (the leader if it can be lent) and waits for its stop. A signal the
    /// thread stops for first is handed back from that very stop, then it is interrupted again.
    func lendOneThread(timeout: Double = 3) throws -> TraceeThread {
        precondition(!held, "with the world held, pickThread lends a thread")
        let deadline = Clock.now() + UInt64(timeout * 1e9)
        while true {
            let candidates = threads.values.filter { !$0.groupStopped }
            let preferred = preferredLender.flatMap { p in candidates.first { $0.tid == p } }
            guard let thread = preferred ?? candidates.first(where: { $0.tid == pid }) ?? candidates.min(by: { $0.tid < $1.tid }) else {
                if threads.isEmpty { throw InjectorError.processExited(pid: pid) }
                throw InjectorError.threadDidNotStop(tid: pid, state: "no thread available to run remote code (all group-stopped)")
            }
            thread.borrowed = true
            if try waitForLentStop(thread, deadline: deadline) { return thread }
        }
    }

    /// True once `thread` sits in a stop it can be lent from; false when it vanished (the caller
    /// picks another). Throws at the deadline, with the thread released again.
    func waitForLentStop(_ thread: TraceeThread, deadline: UInt64) throws -> Bool {
        var asked = false
        while true {
            guard threads[thread.tid] === thread else { return false }
            if thread.stopped && thread.pendingSignal == 0 && !thread.groupStopped { return true }
            if thread.stopped {
                // A signal-delivery or group stop: give it back as it came, then ask again.
                thread.borrowed = false
                try release(thread)
                if thread.groupStopped { return false }
                thread.borrowed = true
                asked = false
            }
            if !asked && !thread.stopped && !thread.interruptPending {
                let e: Int32
                do { e = try Ptrace.tolerating([ESRCH]) { try Ptrace.interrupt(thread.tid) } }
                catch { thread.borrowed = false; throw error }
                if e == ESRCH { thread.borrowed = false; return false }
                thread.interruptPending = true
                asked = true
            }
            guard let ev = try waitEvent(until: min(deadline, Clock.now() + 20_000_000)) else {
                let state = ProcFS.threadState(pid, thread.tid)
                if state == nil || state == "Z" || state == "X" {
                    // Exited (or a zombie leader): another thread is lent instead.
                    thread.borrowed = false
                    if state == "Z" { zombies.insert(thread.tid) }
                    threads[thread.tid] = nil
                    return false
                }
                if Clock.now() >= deadline {
                    thread.borrowed = false
                    if thread.stopped { try? release(thread) }
                    throw InjectorError.threadDidNotStop(tid: thread.tid, state: ProcFS.threadState(pid, thread.tid) ?? "gone")
                }
                continue
            }
            try dispatch(tid: ev.tid, status: ev.status)
        }
    }

    /// Gives a lent thread back to the running world.
    func returnLentThread(_ thread: TraceeThread) {
        thread.borrowed = false
        if !held { try? release(thread) }
    }

    /// Runs `body` for every thread with that thread stopped: all at once while the world is
    /// held, else one at a time (each thread is stopped only for its own turn, the others run).
    /// A thread that vanishes meanwhile is skipped; a group-stopped one whose registers cannot
    /// be read is given to `body` with nil, so a caller can count it as unknown.
    public func forEachThreadStopped(_ body: (pid_t, user_regs_struct?) throws -> Void) throws {
        if held {
            for tid in threadIDs { if let r = try? Ptrace.registers(tid) { try body(tid, r) } }
            return
        }
        for tid in threadIDs {
            guard let thread = threads[tid] else { continue }
            // A listened-to group stop is still a ptrace stop: its registers read as they are.
            if thread.groupStopped { try body(tid, try? Ptrace.registers(tid)); continue }
            thread.borrowed = true
            guard try waitForLentStop(thread, deadline: Clock.now() + 1_000_000_000) else { continue }
            defer { returnLentThread(thread) }
            try body(tid, try? Ptrace.registers(tid))
        }
    }
}
