import Glibc
import Injector
import RemoteTramp

/// A thread hookit saw exit, waiting for its last trace events.
struct ExitedThread {
    let tid: UInt32
    let ticks: UInt64
    /// Its process: when that has exited too by the time the calls end, they end as its exit.
    let process: Tracee
    /// The rings' heads when the exit was seen: its events are all below them.
    let heads: [UInt64]
    /// Gone by its process's exec (a forked child's), not by an exit.
    var byExec = false
}

/// Traced calls, from the ring's entry and end events to the lines printed: every call appears,
/// and says how it ended (issue 17, part 1).
extension HookSession {
    /// Prints the calls that ended. Bounded in time: threads that call faster than hookit
    /// prints would keep it here for ever, and hookit must get back to the tracee's ptrace
    /// events and to its signals.
    func drainTrace(forSeconds limit: Double = 0.02, final: Bool = false) {
        guard let ring else {
            _ = tracee.takeExitedThreads()      // nothing to end: not kept
            return
        }
        let deadline = Clock.seconds() + limit
        while !output.backlogged && Clock.seconds() < deadline && !Interruption.requested {
            let events = ring.drain(max: 4096, final: final)
            if events.isEmpty { break }
            report(callStacks.add(events))
        }
        endCallsOfExitedThreads(final: final)
    }

    func report(_ ended: [EndedCall]) {
        tracedCalls += UInt64(ended.count)
        for c in ended {
            let t = traced[c.entry.function]
            var call = TracedCall(c, function: t.label, signature: t.signature, clock: clock)
            call.stack = stack(of: c.entry)
            let pid = processOfThread[call.tid]
            output.call(call, pid: pid)
            exports.call(call, pid: pid ?? tracee.pid)
        }
    }

    /// A thread's last events may still be in the rings when its exit is seen (hookit reads
    /// behind the writers): its open calls end once the rings are read past where they were.
    private func endCallsOfExitedThreads(final: Bool) {
        noteExitedThreads(of: tracee)
        guard let ring else { return }
        let now = TimeStampCounter.now()
        let due = exitedThreads.filter { final || ring.hasRead(upTo: $0.heads) }
        exitedThreads.removeAll { final || ring.hasRead(upTo: $0.heads) }
        for t in due {
            // All it wrote is read: what still waits for an earlier event of it goes out now.
            report(callStacks.add(ring.releaseWaiting(of: t.tid)))
            let ending: EndedCall.Ending = endingsLost ? .unknown : t.byExec ? .exec : t.process.exited ? .exit : .threadExit
            report(callStacks.threadGone(t.tid, ending, at: min(t.ticks, now)))
        }
    }

    /// Takes the threads `process` saw exit (the traced process, or a child it forked); with
    /// `exec`, all the threads of that child's old image, gone by its exec.
    func noteExitedThreads(of process: Tracee, exec: Bool = false) {
        let pid = process.pid
        let gone = exec ? oldImageThreads(of: pid) : process.takeExitedThreads()
        guard let ring, !gone.isEmpty else { return }
        let now = TimeStampCounter.now(), heads = ring.heads
        for tid in gone {
            exitedThreads.append(ExitedThread(tid: UInt32(bitPattern: tid), ticks: now, process: process, heads: heads, byExec: exec))
        }
    }

    /// An exec leaves one thread, with the process's id: every thread of the old image is gone.
    private func oldImageThreads(of pid: pid_t) -> [pid_t] {
        Set(processOfThread.filter { $0.value == pid }.map(\.key) + [UInt32(bitPattern: pid)]).map { pid_t(bitPattern: $0) }
    }

    /// Every call still open ends: `ending` for the traced process's threads (it exited, ran
    /// exec, or hookit detaches); a forked child's end as it does (exited, or detached with
    /// the session), or unknown when the process's exec leaves its events in the old ring.
    func endOpenCalls(_ ending: EndedCall.Ending) {
        exitedThreads = []
        let alive = Set(children.filter { !$0.tracee.exited }.map(\.tracee.pid))
        let lost = endingsLost
        report(callStacks.endAll(at: TimeStampCounter.now()) { [processOfThread, tracee] tid in
            let pid = processOfThread[tid] ?? tracee.pid
            if lost { return .unknown }
            if pid == tracee.pid { return ending }
            return ending == .exec ? .unknown : alive.contains(pid) ? .detached : .exit
        })
        endingsLost = false
    }

    /// Functions hooked for the user: the marks' functions count only where a hook of the
    /// user's is on them too.
    var userFunctions: Int { table.hookedFunctions.count - markOnlyFunctions.count }

    /// Links made for the user (not the marks).
    var userLinks: Int { table.links.count - (markLinks?.count ?? 0) }

    /// Addresses hooked for a mark alone.
    var markOnlyFunctions: Set<UInt64> {
        guard let marks = markLinks, !marks.isEmpty else { return [] }
        let markIDs = Set(marks.map(\.id))
        let others = Set(table.links.values.filter { !markIDs.contains($0.id) }.map(\.function.address))
        return Set(marks.map(\.function.address)).subtracting(others)
    }

    /// The marks (longjmp, catch, pthread_exit, exit), in the libraries that have them, with the
    /// first --trace or timed --count of an image: calls that never return are then ended (and
    /// timed) where that happened, not at the next call of their thread.
    func linkMarks(_ change: HookTransaction) throws {
        guard markLinks == nil else { return }
        let found = Marks.functions.compactMap { m in (try? symbols.function(m.name)).map { ($0, mark: m.mark) } }
        markLinks = try Marks.link(found, change)
    }
}
