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
/// pid — and at detach their entries are restored too. A child that execs leaves those hooks
/// with its old image: its new image gets a session of its own (ExecedChild), with every hook
/// of this one. `run` ends when the whole family has exited.
extension HookSession {
    /// Takes the children the processes forked since the last round, then services every child's
    /// events (its signals handed back, its new threads followed) and gives those that exec a
    /// session of their own.
    func serviceChildren() {
        for parent in [tracee] + children.map(\.tracee) {
            while !parent.forked.isEmpty {
                let c = parent.forked.removeFirst()
                let inherited = c.sharesMemory ? nil
                    : parent === tracee ? table.inheritedPatches : children.first { $0.tracee === parent }?.inherited
                children.append(FollowedChild(tracee: parent.adopt(forked: c), inherited: inherited))
                processOfThread[UInt32(bitPattern: c.pid)] = c.pid
                // Its thread numbers its events on from its parent's thread (the TLS is a copy).
                if !c.sharesMemory { ring?.threadStartsAnew(UInt32(bitPattern: c.pid)) }
                output.fork(pid: parent.pid, child: c.pid, functions: userFunctions)
            }
        }
        for c in children {
            do { try c.tracee.pump(seconds: 0) } catch { /* gone: reaped below */ }
            if c.tracee.execPending { followExec(of: c) }
        }
        children.removeAll { c in execedChildren.contains { $0.tracee === c.tracee } }
        serviceExecedChildren()
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

    /// A child that ran exec: its new image is hooked from its `main` by a session of its own,
    /// with this session's hooks and exports; it reports as its own process (`attached`, its
    /// counts, `exited`). If that fails, the new image runs on unhooked.
    private func followExec(of c: FollowedChild) {
        // The calls its old image had open end here: the new image's go to a ring of its own.
        noteExitedThreads(of: c.tracee, exec: true)
        do {
            try c.tracee.runExecedImageToMain()
        } catch {
            output.problem("child \(c.tracee.pid) ran exec; its new image runs without hooks: \(error)")
            c.tracee.releaseExec()
            c.tracee.detach()
            return
        }
        do {
            // Hook by hook, as after the process's own exec: one that matches nothing in the new
            // image does not leave the others out.
            let s = try HookSession(pid: c.tracee.pid, requests: [], options: options, output: output, spawned: c.tracee,
                                    exports: exports, inherited: hooks)
            execedChildren.append(s)
        } catch {
            // Nothing of a failed add stays: the image is as it was.
            output.problem("child \(c.tracee.pid) ran exec (\(c.tracee.programPath)); its new image runs without hooks: \(error)")
            try? c.tracee.resumeWorld()
            c.tracee.detach()
        }
    }

    /// One round for each exec'd child's session; one whose family has exited reports and goes.
    private func serviceExecedChildren() {
        for s in execedChildren {
            do { try s.service(seconds: 0) } catch { /* gone: reported below */ }
        }
        for s in execedChildren where s.familyExited {
            _ = s.detach(exitExpected: true)
            absorbMatches(of: s)
        }
        execedChildren.removeAll { $0.familyExited }
    }

    /// A pattern an exec'd child matched is not one this session's process never matched.
    private func absorbMatches(of s: HookSession) {
        matched.formUnion(s.matched)
        pending.removeAll { matched.contains($0) }
    }

    /// The process and every process it started (forked, or forked and exec'd) have exited.
    var familyExited: Bool { tracee.exited && children.isEmpty && execedChildren.isEmpty }

    /// Restores what each child inherited and detaches it, and detaches the exec'd children's
    /// sessions; the problems, if any.
    func detachChildren() -> [String] {
        var problems: [String] = []
        for s in execedChildren {
            if !s.detach(exitExpected: s.tracee.exited) {
                problems.append("process \(s.tracee.pid) (a child that ran exec) was not restored cleanly")
            }
            absorbMatches(of: s)
        }
        execedChildren.removeAll()
        for c in children where !c.tracee.exited {
            if let patches = c.inherited { problems += patches.restore(in: c.tracee).problems }
            problems += c.tracee.detach().problems
        }
        children.removeAll()
        return problems
    }
}
