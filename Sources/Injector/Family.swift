import Glibc

/// A child process a tracee forked, attached by the kernel (PTRACE_O_TRACEFORK / _VFORK).
public struct ForkedChild: Sendable {
    public let pid: pid_t
    /// A vfork child: it runs in its parent's memory until it execs or exits.
    public let sharesMemory: Bool
}

/// Every process hookit traces at once: a tracee and the children it forked. waitpid(-1) reports
/// them all to whichever Tracee waits, so each event is handed to the Tracee of its thread
/// group; an event of a child whose Tracee does not exist yet (its first stop can come before
/// its parent's fork event) is kept until it does.
///
/// Threading: like every Tracee, used from the one thread that traces (see Tracee).
enum Family {
    final class Member { weak var tracee: Tracee?; init(_ t: Tracee) { tracee = t } }
    nonisolated(unsafe) static var members: [pid_t: Member] = [:]
    nonisolated(unsafe) static var waiting: [pid_t: [(tid: pid_t, status: Int32)]] = [:]

    static func register(_ t: Tracee) {
        members[t.pid] = Member(t)
        if let kept = waiting.removeValue(forKey: t.pid) { t.inbox += kept }
    }

    static func unregister(_ pid: pid_t) {
        if members[pid]?.tracee == nil { members[pid] = nil }
    }

    /// True: the event is `waiter`'s. Otherwise it went to the inbox of its own Tracee, or is
    /// kept for a child not taken yet. A thread hookit cannot place (gone, and known to nobody)
    /// is the waiter's, as when only one process was traced.
    static func route(_ tid: pid_t, _ status: Int32, waiter: Tracee) -> Bool {
        if tid == waiter.pid || waiter.threads[tid] != nil { return true }
        for m in members.values {
            guard let t = m.tracee, t !== waiter, t.pid == tid || t.threads[tid] != nil else { continue }
            t.inbox.append((tid, status))
            return false
        }
        guard let group = ProcFS.statusField("/proc/\(tid)/status", "Tgid").flatMap({ pid_t($0) }), group != waiter.pid else { return true }
        if let t = members[group]?.tracee {
            t.inbox.append((tid, status))
            return false
        }
        guard members.values.contains(where: { $0.tracee?.followsForks ?? false }) else { return true }
        waiting[group, default: []].append((tid, status))
        return false
    }
}

extension Tracee {
    /// The Tracee of a child this one forked: the kernel attached it with this tracee's options,
    /// and its first stop comes by itself (and is released by the next pump, as a new thread's).
    public func adopt(forked child: ForkedChild) -> Tracee {
        let t = Tracee(pid: child.pid)
        t.followsForks = followsForks
        t.followsExec = followsExec
        t.threads[child.pid] = TraceeThread(tid: child.pid)
        t.threads[child.pid]?.interruptPending = true
        return t
    }
}
