import CPtrace
import Glibc

/// One traced process: every one of its threads seized with PTRACE_SEIZE.
///
/// Threading: ptrace binds a tracee to the tracer *thread* that seized it, so a Tracee must be
/// used from one thread only, from attach to detach. It owns waitpid(-1, __WALL) while it
/// waits: a caller that also has ordinary children must not wait for them concurrently.
///
/// Holding: while `held` (the world is stopped), every stop a thread reports is kept; otherwise
/// every stop is released at once (signals handed back, group stops listened to), so the
/// tracee behaves as without hookit. Events are only seen when hookit waits; a caller that stays
/// attached while the tracee runs calls `pump(seconds:)` regularly.
public final class Tracee {
    public let pid: pid_t
    public internal(set) var threads: [pid_t: TraceeThread] = [:]
    public let memory: RemoteMemory

    /// True from a successful stopWorld until resumeWorld.
    public internal(set) var held = false
    /// The tracee (its last thread) is gone.
    public internal(set) var exited = false
    /// The tracee called execve while attached: its modules and symbols are no longer valid.
    public internal(set) var execed = false
    /// An exec stop is held for the caller (the thread stays in it until `runExecedImageToMain`
    /// or a release): whoever follows the process across exec decides what happens next.
    public internal(set) var execPending = false
    /// Hold exec stops (`execPending`) instead of letting the new image run at once.
    public var followsExec = false
    /// Threads whose exit hookit has seen since the last takeExitedThreads.
    private var exitedThreads: [pid_t] = []

    /// The threads seen exiting since the last call (a trace ends their calls still open).
    public func takeExitedThreads() -> [pid_t] {
        defer { exitedThreads = [] }
        return exitedThreads
    }

    /// The leader's waitpid status once it exited while traced (the process's exit status).
    public internal(set) var exitStatus: Int32?
    public internal(set) var stopStats = StopStats()
    var heldSince: UInt64 = 0
    /// Set by attachRunning until the first stopWorld has read the thread list under the stop.
    var threadListUnsettled = false
    /// Threads that turned zombie (a leader that called pthread_exit): they never stop again.
    var zombies: Set<pid_t> = []
    /// Bytes of the tracee that a remote stub currently occupies, restored on completion.
    var stubLease: StubLease?
    /// A descriptor whose input ends `pump` early (a message from code in the tracee that waits
    /// for hookit); -1: none.
    public var wakeDescriptor: Int32 = -1
    /// The thread remote calls and syscalls are run on while set, when it can be lent: one that
    /// holds a lock the call needs (the loader's, while it waits for hookit in a notification),
    /// which any other thread would wait for until hookit answers.
    public var preferredLender: pid_t?
    /// Children it forked (PTRACE_EVENT_FORK, with `followsForks`) not yet taken by the caller.
    public var forked: [ForkedChild] = []
    /// PTRACE_O_TRACEFORK and _VFORK on every thread: children are attached by the kernel.
    public internal(set) var followsForks = false
    var extraOptions: UInt64 { followsForks ? Ptrace.forkOptions : 0 }
    /// Libraries the dynamic loader loaded before the program's code ran (`spawn` with
    /// `.beforeInitializers`), by path as asked, with their load bias. Emptied by an exec.
    public internal(set) var preloaded: [String: UInt64] = [:]
    /// Held before the program's first instruction (`spawn` with `.beforeInitializers`): its libc
    /// has not started, so no library function (dlopen, dlsym) may be called in it; libraries
    /// are only those `preloaded`. Ends with the first resumeWorld.
    public internal(set) var beforeStart = false
    /// Events waitpid(-1) gave another Tracee for this one (see Family).
    var inbox: [(tid: pid_t, status: Int32)] = []

    init(pid: pid_t) {
        self.pid = pid
        self.memory = RemoteMemory(pid: pid)
        Family.register(self)
    }

    deinit {
        if !threads.isEmpty { _ = detach() }
        Family.unregister(pid)
    }

    // MARK: - attach

    /// Seizes every thread of `pid` and returns with the world stopped (`held`).
    ///
    /// Race-freedom: threads created by a seized thread are attached by the kernel
    /// (PTRACE_O_TRACECLONE); threads created by a not-yet-seized one show up in the next read of
    /// /proc/PID/task. A thread seized in the middle of clone() may finish creating a child only
    /// after that read, so the loop ends only when a read taken while every seized thread is
    /// stopped (none can be inside clone) shows no thread hookit does not have.
    public static func attach(pid: pid_t) throws -> Tracee {
        try Preflight.check(pid: pid, forAttach: true)
        return try seized(pid) { try $0.seizeAll() }
    }

    /// A tracee of `pid` whose threads `seize` took; on failure every thread it took is let go.
    private static func seized(_ pid: pid_t, followForks: Bool = false, _ seize: (Tracee) throws -> Void) throws -> Tracee {
        let t = Tracee(pid: pid)
        t.followsForks = followForks
        do {
            try seize(t)
        } catch {
            _ = t.detach()
            throw error
        }
        return t
    }

    /// Seizes every thread of `pid` without stopping any: the process runs on. Preparing hooks
    /// needs no stop (remote calls lend one thread), so the first stop of the world is the one
    /// that pokes. A thread that was inside clone() while its parent was seized may create its
    /// child untraced and after the last read of /proc/PID/task (see `attach`); so the first
    /// stopWorld settles the thread list, as `attach` does, before anything is poked.
    /// `checked`: the caller's own preflight of `pid`, which is then not made again.
    /// `followForks`: children are attached by the kernel (see Family).
    public static func attachRunning(pid: pid_t, checked: Preflight.Passed? = nil, followForks: Bool = false) throws -> Tracee {
        if checked?.pid != pid { try Preflight.check(pid: pid, forAttach: true) }
        let t = try seized(pid, followForks: followForks) { try $0.seizeListed() }
        t.threadListUnsettled = true
        return t
    }

    /// Seizes threads until a read of /proc/PID/task shows none hookit lacks (no stop).
    func seizeListed() throws {
        for _ in 0..<10_000 {
            try checkInterrupted()
            guard let listed = ProcFS.threads(pid) else { throw InjectorError.processExited(pid: pid) }
            try drainEvents()
            let fresh = listed.filter { threads[$0] == nil && !zombies.contains($0) }
            if fresh.isEmpty { return }
            for tid in fresh { try seize(tid) }
        }
        throw InjectorError.threadDidNotStop(tid: pid, state: "thread list never settled")
    }

    func seizeAll() throws {
        var rounds = 0
        while true {
            rounds += 1
            if rounds > 10_000 { throw InjectorError.threadDidNotStop(tid: pid, state: "thread list never settled") }
            try checkInterrupted()
            guard let listed = ProcFS.threads(pid) else { throw InjectorError.processExited(pid: pid) }
            try drainEvents()
            let fresh = listed.filter { threads[$0] == nil && !zombies.contains($0) }
            if fresh.isEmpty {
                if held { return }
                try stopWorld()
                continue
            }
            for tid in fresh { try seize(tid) }
            if held { try bringAllToStop() }
        }
    }

    private func seize(_ tid: pid_t) throws {
        let e = try Ptrace.tolerating([ESRCH, EPERM]) { try Ptrace.seize(tid, extra: extraOptions) }
        switch e {
        case 0:
            threads[tid] = TraceeThread(tid: tid)
        case ESRCH:
            if tid == pid && threads.isEmpty { throw InjectorError.noSuchProcess(pid: pid) }
        case EPERM:
            // Already ours: a thread the kernel attached for us whose clone event is still queued.
            if let tracer = ProcFS.statusField("/proc/\(pid)/task/\(tid)/status", "TracerPid"),
               pid_t(tracer) == getpid() {
                if threads[tid] == nil { threads[tid] = TraceeThread(tid: tid) }
                return
            }
            if let tracer = ProcFS.statusField("/proc/\(pid)/task/\(tid)/status", "TracerPid"),
               let tp = pid_t(tracer), tp != 0 {
                throw InjectorError.alreadyTraced(pid: pid, tracer: tp, tracerName: ProcFS.comm(tp))
            }
            // PTRACE_SEIZE also says EPERM for a thread that is already exiting.
            if tid != pid {
                let state = ProcFS.threadState(pid, tid)
                if state == nil || state == "Z" || state == "X" { return }
            }
            throw InjectorError.permissionDenied(pid: pid, operation: "attach to", hint: Preflight.permissionHint(pid))
        default:
            break
        }
    }

    // MARK: - events

    /// Waits for one ptrace event from any thread, up to `deadline` (monotonic ns).
    /// Returns nil at the deadline; throws when the tracee is gone entirely.
    func waitEvent(until deadline: UInt64, wake: Int32 = -1, returnOnRouted: Bool = false) throws -> (tid: pid_t, status: Int32)? {
        var spins = 0
        while true {
            if !inbox.isEmpty { return inbox.removeFirst() }
            var status: Int32 = 0
            let r = waitpid(-1, &status, __WALL | WNOHANG)
            if r > 0 {
                // waitpid(-1) reports every process hookit traces: another's event goes to it.
                if Family.route(r, status, waiter: self) { return (r, status) }
                if returnOnRouted { return nil }
                continue
            }
            if r < 0 {
                if errno == EINTR { continue }
                if errno == ECHILD {
                    // Nothing seized yet: nothing to wait for. Otherwise every thread is gone.
                    if threads.isEmpty && !held { return nil }
                    exited = true
                    threads.removeAll()
                    throw InjectorError.processExited(pid: pid)
                }
                throw InjectorError.ptraceFailed(request: "waitpid", tid: -1, errno: errno)
            }
            let now = Clock.now()
            if now >= deadline { return nil }
            // Stops usually arrive within microseconds: spin briefly, then sleep (until SIGCHLD
            // when the process opted in, see ChildSignal), or back off.
            spins += 1
            if wake >= 0 && ChildSignal.readable(wake) { return nil }
            if ChildSignal.fd >= 0 { if spins < 4 { sched_yield() } else { ChildSignal.sleep(upTo: deadline - now, alsoWakingOn: wake) } }
            else if spins < 64 { sched_yield() } else { usleep(spins < 512 ? 20 : 200) }
        }
    }

    /// Applies one waitpid status to hookit's picture of the threads, then releases the thread
    /// unless the world is held or the thread is borrowed.
    func dispatch(tid: pid_t, status: Int32) throws {
        if hk_wifexited(status) != 0 || hk_wifsignaled(status) != 0 {
            if tid == pid { exitStatus = status }
            threads[tid] = nil
            exitedThreads.append(tid)
            if threads.isEmpty { exited = true }
            return
        }
        guard hk_wifstopped(status) != 0 else { return }
        let thread = adopt(tid)
        thread.stopped = true
        thread.interruptPending = false
        thread.inSyscallStop = false
        let sig = hk_wstopsig(status)
        switch hk_wptrace_event(status) {
        case Int32(HK_PTRACE_EVENT_CLONE):
            adoptClone(pid_t(truncatingIfNeeded: try Ptrace.eventMessage(tid)))
        case Ptrace.eventFork, Ptrace.eventVfork:
            forked.append(ForkedChild(pid: pid_t(truncatingIfNeeded: try Ptrace.eventMessage(tid)),
                                      sharesMemory: hk_wptrace_event(status) == Ptrace.eventVfork))
        case Int32(HK_PTRACE_EVENT_EXEC):
            // Every other thread is gone and the execing thread now has the leader's id.
            execed = true
            for other in threads.keys where other != tid { threads[other] = nil }
            // The old image's stub bytes and zombie threads went with it.
            stubLease = nil
            zombies.removeAll()
            preloaded = [:]
            memory.reopen()
            if followsExec && !held && !thread.borrowed {
                execPending = true
                return
            }
        case Int32(HK_PTRACE_EVENT_STOP):
            // SIGTRAP: an interrupt (or a new thread's first) stop; a stop signal: a group-stop.
            thread.groupStopped = [SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU].contains(sig)
        default:
            if sig == (SIGTRAP | 0x80) {
                thread.inSyscallStop = true
            } else {
                thread.pendingSignal = sig
                if sig == SIGCONT { thread.groupStopped = false }
            }
        }
        if !held && !thread.borrowed { try release(thread) }
    }

    /// A thread the kernel attached for us (PTRACE_O_TRACECLONE). Its first stop comes by
    /// itself, so no interrupt is sent — unless that stop was already reported (it may arrive
    /// before the parent's clone event) and the thread released, in which case it is known.
    /// The child may also have run and exited already (its exit reaped before this event):
    /// then it is not in /proc any more and must not be waited for.
    func adoptClone(_ tid: pid_t) {
        if threads[tid] != nil { return }
        if access("/proc/\(pid)/task/\(tid)", F_OK) != 0 { return }
        adopt(tid).interruptPending = true
    }

    @discardableResult
    func adopt(_ tid: pid_t) -> TraceeThread {
        if let t = threads[tid] { return t }
        let t = TraceeThread(tid: tid)
        threads[tid] = t
        return t
    }

    /// Lets a stopped thread run again from the stop it is in: a group-stopped thread is
    /// listened to (it stays stopped, as job control wants), any other is continued with the
    /// signal it stopped for.
    func release(_ thread: TraceeThread) throws {
        guard thread.stopped else { return }
        let e = try Ptrace.tolerating([ESRCH]) {
            if thread.groupStopped && thread.pendingSignal == 0 { try Ptrace.listen(thread.tid) }
            else { try Ptrace.cont(thread.tid, signal: thread.pendingSignal) }
        }
        if e == ESRCH { threads[thread.tid] = nil; return }
        thread.stopped = false
        thread.pendingSignal = 0
    }

    /// Handles every event already queued, without waiting.
    func drainEvents() throws {
        while let ev = try waitEvent(until: 0) { try dispatch(tid: ev.tid, status: ev.status) }
    }

    /// Services the tracee's events for up to `seconds` while it runs: signals are handed back,
    /// new threads followed, group stops kept. Call it regularly while attached and not held.
    public func pump(seconds: Double) throws {
        let deadline = Clock.now() + UInt64(seconds * 1e9)
        while let ev = try waitEvent(until: deadline, wake: wakeDescriptor, returnOnRouted: true) {
            try dispatch(tid: ev.tid, status: ev.status)
        }
    }

    func checkInterrupted() throws { try Interruption.check() }
}

/// How long the world was stopped, for reports and benchmarks.
public struct StopStats: Sendable {
    public var count = 0
    public var lastNanos: UInt64 = 0
    public var longestNanos: UInt64 = 0
    public var totalNanos: UInt64 = 0

    mutating func record(_ ns: UInt64) {
        count += 1
        lastNanos = ns
        longestNanos = max(longestNanos, ns)
        totalNanos += ns
    }
}

public enum Clock {
    /// CLOCK_MONOTONIC in nanoseconds.
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// CLOCK_MONOTONIC in seconds.
    public static func seconds() -> Double { Double(now()) / 1e9 }
}
