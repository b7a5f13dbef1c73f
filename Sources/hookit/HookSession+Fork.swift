import Injector
import RemoteTramp

/// A child the process forked, followed (issue 17, part 4).
struct FollowedChild {
    let tracee: Tracee
    /// What to restore in it at detach; nil for a vfork child (it shares its parent's memory,
    /// which the parent's detach restores).
    let inherited: InheritedPatches?
}

/// Children the process forks (and their children) are attached by the kernel and followed:
/// they run the parent's hooks as it had them at the fork — the same images, whose counters and
/// trace ring are shared memory, so their calls count with the parent's and trace with their own
/// pid — and at detach their entries are restored too. A child that execs leaves its hooks with
/// its old image and is let go; `run` ends when the whole family has exited.
extension HookSession {
    /// Takes the children the processes forked since the last round, then services every child's
    /// events (its signals handed back, its new threads followed) and lets go those that exec.
    func serviceChildren() {
        for parent in [tracee] + children.map(\.tracee) {
            while !parent.forked.isEmpty {
                let c = parent.forked.removeFirst()
                let inherited = c.sharesMemory ? nil
                    : parent === tracee ? table.inheritedPatches : children.first { $0.tracee === parent }?.inherited
                children.append(FollowedChild(tracee: parent.adopt(forked: c), inherited: inherited))
                processOfThread[UInt32(bitPattern: c.pid)] = c.pid
                output.fork(pid: parent.pid, child: c.pid, functions: userFunctions)
            }
        }
        for c in children {
            do { try c.tracee.pump(seconds: 0) } catch { /* gone: reaped below */ }
            if c.tracee.execPending {
                // Its new image has none of the parent's patches; it runs on unhooked.
                c.tracee.releaseExec()
                c.tracee.detach()
            }
        }
        noteThreads()
        for c in children { noteExitedThreads(of: c.tracee) }
        children.removeAll { $0.tracee.exited || $0.tracee.threads.isEmpty }
    }

    /// Every thread's process, kept for trace events that arrive after the thread is gone.
    private func noteThreads() {
        for t in [tracee] + children.map(\.tracee) {
            for tid in t.threads.keys { processOfThread[UInt32(bitPattern: tid)] = t.pid }
        }
    }

    /// Restores what each child inherited and detaches it; the problems, if any.
    func detachChildren() -> [String] {
        var problems: [String] = []
        for c in children where !c.tracee.exited {
            if let patches = c.inherited { problems += patches.restore(in: c.tracee).problems }
            problems += c.tracee.detach().problems
        }
        children.removeAll()
        return problems
    }
}
