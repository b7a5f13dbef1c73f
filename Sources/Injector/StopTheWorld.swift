import CPtrace
import Glibc

extension Tracee {
    /// Interrupts every thread (PTRACE_INTERRUPT) and waits until each one is in a ptrace-stop.
    /// While held, no thread of the tracee runs: this is the state every poke happens in
    /// (design.md invariant 1). Threads born meanwhile are waited for too.
    public func stopWorld(timeout: Double = 3) throws {
        precondition(!held, "stopWorld while the world is already stopped")
        try drainEvents()
        held = true
        heldSince = Clock.now()
        do {
            try bringAllToStop(timeout: timeout)
            if threadListUnsettled {
                // Only a read taken while every seized thread is stopped (none inside clone)
                // proves hookit has them all (see Tracee.attachRunning).
                try seizeAll()
                threadListUnsettled = false
            }
        } catch {
            try? resumeWorld()
            throw error
        }
    }

    /// Interrupts every running thread and waits for all of them, including threads born while
    /// waiting, to stop. A thread that stays running past `timeout` is a zombie leader (it never
    /// stops again and is left out) or an error.
    func bringAllToStop(timeout: Double = 3) throws {
        for thread in threads.values where !thread.stopped && !thread.interruptPending {
            // ESRCH: exiting; its exit status will arrive.
            if try Ptrace.tolerating([ESRCH], { try Ptrace.interrupt(thread.tid) }) == ESRCH { continue }
            thread.interruptPending = true
        }
        let deadline = Clock.now() + UInt64(timeout * 1e9)
        while threads.values.contains(where: { !$0.stopped }) {
            // New threads are attached by the kernel and report a first stop on their own.
            if let ev = try waitEvent(until: min(deadline, Clock.now() + 20_000_000)) {
                try dispatch(tid: ev.tid, status: ev.status)
                continue
            }
            try setAsideNonStopping()
            if Clock.now() >= deadline, threads.values.contains(where: { !$0.stopped }) {
                let t = threads.values.first(where: { !$0.stopped })!
                throw InjectorError.threadDidNotStop(tid: t.tid, state: ProcFS.threadState(pid, t.tid) ?? "gone")
            }
        }
        if threads.isEmpty { throw InjectorError.processExited(pid: pid) }
    }

    /// Zombie threads (a leader that called pthread_exit while others run) never report a stop;
    /// vanished threads report their exit later. Neither can hold the world up.
    private func setAsideNonStopping() throws {
        for t in threads.values where !t.stopped {
            let state = ProcFS.threadState(pid, t.tid)
            if state == nil || state == "Z" || state == "X" {
                threads[t.tid] = nil
                if state != nil { zombies.insert(t.tid) }
            }
        }
    }

    /// Releases every held thread from the stop it is in and records how long the world was
    /// stopped. A thread that had a signal pending gets it now, so nothing is swallowed.
    public func resumeWorld() throws {
        guard held else { return }
        held = false
        beforeStart = false
        stopStats.record(Clock.now() &- heldSince)
        var firstError: Error?
        for thread in Array(threads.values) where !thread.borrowed {
            do { try release(thread) } catch { firstError = firstError ?? error }
        }
        if let e = firstError { throw e }
    }

    /// Detaches from every thread, whatever happened before. Never throws: each failure is
    /// collected in the report. Threads leave with the registers they have (a remote operation
    /// restores its thread before it returns) and with any signal they stopped for; a
    /// group-stopped thread stays stopped, as it would without hookit.
    @discardableResult
    public func detach() -> DetachReport {
        var report = DetachReport()
        if threads.isEmpty { return report }
        try? drainEvents()
        if !held {
            detachThreadByThread(&report)
            return report
        }
        if held { stopStats.record(Clock.now() &- heldSince) }
        held = false
        if let lease = stubLease, !lease.inUse {
            do { try restoreStubBytes() } catch { report.problems.append("\(error)") }
        }
        for thread in threads.values {
            if !thread.stopped {
                report.problems.append("thread \(thread.tid) was running; the kernel detaches it when hookit exits")
                continue
            }
            let sig = thread.groupStopped ? 0 : thread.pendingSignal
            do {
                try Ptrace.tolerating([ESRCH]) { try Ptrace.detach(thread.tid, signal: sig) }
                report.detachedThreads += 1
            } catch {
                report.problems.append("\(error)")
            }
        }
        threads.removeAll()
        reapExitedThreads()
        report.stopStats = stopStats
        return report
    }
}

extension Tracee {
    /// Detach while the world runs: PTRACE_DETACH needs its thread in a ptrace-stop, but not the
    /// others, so each thread is stopped only for its own detach. Threads born meanwhile (the
    /// kernel attaches them to hookit) are detached the same way.
    func detachThreadByThread(_ report: inout DetachReport) {
        if let lease = stubLease, !lease.inUse {
            // No thread runs the stub now (none is borrowed): its bytes go back while running.
            do { try restoreStubBytes() } catch { report.problems.append("\(error)") }
        }
        var rounds = 0
        while rounds < 100_000 {
            guard let tid = threads.keys.min() ?? stillTraced() else { break }
            rounds += 1
            let thread = threads[tid]!
            thread.borrowed = true                    // dispatch keeps its stop for us
            if !thread.stopped && !thread.interruptPending {
                if (try? Ptrace.tolerating([ESRCH]) { try Ptrace.interrupt(tid) }) == ESRCH { threads[tid] = nil; continue }
                thread.interruptPending = true
            }
            let deadline = Clock.now() + 1_000_000_000
            var exiting = false
            var nextLook = Clock.now() + 10_000_000
            while threads[tid] === thread && !thread.stopped && Clock.now() < deadline {
                if Clock.now() >= nextLook {
                    // A thread on its way out (or a zombie leader) never stops again; other
                    // threads' events may keep coming all the while, so look every 10 ms.
                    let state = ProcFS.threadState(pid, tid)
                    if state == nil || state == "Z" || state == "X" { exiting = true; break }
                    nextLook = Clock.now() + 10_000_000
                }
                guard let ev = try? waitEvent(until: min(deadline, nextLook)) else { continue }
                try? dispatch(tid: ev.tid, status: ev.status)
            }
            guard threads[tid] === thread else { continue }
            if !thread.stopped {
                // Gone meanwhile (its exit reported to nobody: reaped with its thread group).
                let state = ProcFS.threadState(pid, tid)
                if state == nil || state == "Z" || state == "X" { exiting = true }
                if !exiting {
                    let state = ProcFS.threadState(pid, tid) ?? "gone"
                    report.problems.append("thread \(tid) did not stop in 1 s (state \(state), interrupt \(thread.interruptPending ? "pending" : "not sent")); the kernel detaches it when hookit exits")
                }
                threads[tid] = nil
                continue
            }
            let sig = thread.groupStopped ? 0 : thread.pendingSignal
            do {
                try Ptrace.tolerating([ESRCH]) { try Ptrace.detach(tid, signal: sig) }
                report.detachedThreads += 1
            } catch {
                report.problems.append("\(error)")
            }
            threads[tid] = nil
        }
        threads.removeAll()
        reapExitedThreads()
        report.stopStats = stopStats
    }

    /// A thread still traced by hookit that it no longer lists: a clone child the kernel
    /// attached while the last threads were being detached, its clone event not yet seen.
    /// Adopted so the detach loop detaches it too; nil when there is none.
    private func stillTraced() -> pid_t? {
        try? drainEvents()
        if let t = threads.keys.min() { return t }
        let me = "\(getpid())"
        for tid in ProcFS.threads(pid) ?? [] where !zombies.contains(tid) {
            guard ProcFS.statusField("/proc/\(pid)/task/\(tid)/status", "TracerPid") == me else { continue }
            let state = ProcFS.threadState(pid, tid)
            if state == nil || state == "Z" || state == "X" { continue }
            let t = adopt(tid)
            // In a ptrace stop whose report hookit may never get (taken before it knew the
            // thread): it can be detached from that stop as it is.
            t.stopped = state == "t"
            return tid
        }
        return nil
    }

    /// A thread that exited while traced stays a zombie until its tracer waits for it. Wait for
    /// those of this tracee by id (never waitpid(-1): the caller's other children are not ours).
    func reapExitedThreads() {
        for tid in ProcFS.threads(pid) ?? [] {
            guard ProcFS.statusField("/proc/\(pid)/task/\(tid)/status", "TracerPid") == "\(getpid())" else { continue }
            // Only the dead: a wait on a live thread would take (and lose) its next stop.
            let state = ProcFS.threadState(pid, tid)
            guard state == nil || state == "Z" || state == "X" else { continue }
            var status: Int32 = 0
            _ = waitpid(tid, &status, __WALL | WNOHANG)
        }
    }
}

public struct DetachReport: Sendable {
    public var detachedThreads = 0
    public var problems: [String] = []
    public var stopStats = StopStats()
}
