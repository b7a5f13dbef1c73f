import Glibc
import Injector
import RemoteTramp

/// The processes one `hookit attach` hooks (`attach PID PID ...`, `--name NAME`): a HookSession
/// each, all pumped in the same rounds, as a fork family is (waitpid(-1) hands each process's
/// events to its own Tracee: see Injector's Family). Each session has its own trampolines,
/// counts and trace ring; they share the output and the export files, where every event and
/// series carries its pid. Counts are per process: no total is made across them.
///
/// A process that cannot be hooked is reported (an `error` naming its pid) and leaves the others
/// alone; one whose process ends, or whose servicing fails, is detached and reported on its own
/// while the others go on.
final class ProcessSet {
    /// The sessions still attached, in the order their processes were given.
    private(set) var sessions: [HookSession] = []
    private let output: Output
    private let exports: Exports
    /// Every detach so far restored everything.
    private var clean = true
    private var nextHookID = 1

    /// Attaches to each of `pids` with `requests`. With one pid its failure is the command's
    /// (thrown as it is); with several, a failure is reported and the next one is tried, and
    /// NoProcessAttached is thrown when none could be hooked. A termination signal ends the
    /// attaching: those not reached yet are not attached.
    init(pids: [pid_t], requests: [HookRequest], options: SessionOptions, output: Output) throws {
        self.output = output
        exports = try Exports(options: options, output: output)
        var failed: [pid_t] = []
        for pid in pids {
            if Interruption.requested { break }
            do {
                sessions.append(try HookSession(pid: pid, requests: requests, options: options, output: output, exports: exports))
            } catch {
                // The session cleared the request to clean up; the remaining processes must
                // still not be attached, and the set detaches at once.
                if case InjectorError.interrupted(let s)? = error as? InjectorError { Interruption.request(s) }
                if pids.count == 1 { exports.close(); throw error }
                output.error(ProcessFailure(pid: pid, error: error).description, pid: pid)
                failed.append(pid)
            }
        }
        if sessions.isEmpty {
            exports.close()
            throw NoProcessAttached(pids: failed)
        }
        nextHookID = sessions.map(\.nextHookID).max() ?? 1
    }

    /// Services every session until the duration passes, a termination signal arrives or every
    /// process has ended.
    func runUntilDone(duration: Double?) {
        let start = Clock.seconds()
        while !Interruption.requested && !sessions.isEmpty {
            if let d = duration, Clock.seconds() - start >= d { break }
            service(seconds: 0.05)
        }
    }

    /// One round: the first session waits up to `seconds` for its process's events (a wait that
    /// ends as soon as any traced process reports one, see Tracee.pump), the others take what
    /// is there. A session whose process ended or that failed is detached and dropped.
    func service(seconds: Double) {
        // A session reads its trace ring at every round; the round must come often enough for
        // any of them.
        let wait = sessions.contains { $0.ring != nil } ? min(seconds, 0.01) : seconds
        var ended: [Int] = []
        for (i, s) in sessions.enumerated() {
            do {
                try s.service(seconds: i == 0 ? wait : 0)
                if s.familyExited { ended.append(i) }
            } catch {
                output.problem(output.several ? "PID \(s.tracee.pid): \(error)" : "\(error)")
                ended.append(i)
            }
        }
        for i in ended.reversed() { retire(sessions.remove(at: i)) }
    }

    /// Detaches one session while the others stay; a termination signal that came meanwhile is
    /// kept for them (a session's detach forgets it, so as not to be cut short by it).
    private func retire(_ s: HookSession) {
        let asked = Interruption.signal
        clean = s.detach() && clean
        if let asked { Interruption.request(asked) }
    }

    /// Detaches every process still attached. False when something was left behind or a
    /// process ended while hooked.
    func detach() -> Bool {
        for s in sessions { clean = s.detach() && clean }
        sessions.removeAll()
        exports.close()
        output.finish()
        return clean
    }

    // MARK: - interactive commands, applied to every process

    /// `add`: the same hook in every process, under one id; each process answers (`added` or
    /// an `error` with its pid). Throws when no process took it.
    func add(_ requests: [HookRequest], text: String) throws {
        var lastError: Error?
        var took = false
        for s in sessions {
            do {
                let (hook, report) = try s.add(requests, text: text, id: nextHookID)
                output.added(hook, report: report, stop: s.tracee.stopStats, pid: s.tracee.pid)
                took = true
            } catch {
                if sessions.count == 1 { throw error }
                output.error(ProcessFailure(pid: s.tracee.pid, error: error).description, pid: s.tracee.pid)
                lastError = error
            }
        }
        if !took, let lastError { throw lastError }
        nextHookID += 1
    }

    /// `remove ID`: in every process that has the hook; each answers with its own calls.
    func remove(_ id: Int) throws {
        let having = sessions.filter { s in s.hooks.contains { $0.id == id } }
        if having.isEmpty { throw TrampolineError.unknownLink(id: id) }
        for s in having {
            do {
                let (hook, stats) = try s.remove(id)
                output.removed(hook, stats: stats, pid: s.tracee.pid)
            } catch {
                if sessions.count == 1 { throw error }
                output.error(ProcessFailure(pid: s.tracee.pid, error: error).description, pid: s.tracee.pid)
            }
        }
    }

    /// `list`: one answer per process.
    func list() {
        for s in sessions { output.list(s.hooks.map { ($0, s.total($0)) }, pid: s.tracee.pid) }
    }
}

/// One process of several could not be hooked (or take an interactive change): the error,
/// said with the process it concerns.
struct ProcessFailure: Error, CustomStringConvertible {
    let pid: pid_t
    let error: Error

    var description: String {
        let text = advice(for: error)
        // Most of Injector's errors about a process already name it ("PID 1234 is ...").
        return text.contains("PID \(pid)") ? text : "PID \(pid) (\(processName(pid))): \(text)"
    }
}

/// None of the processes given could be hooked (each was reported).
struct NoProcessAttached: Error, CustomStringConvertible {
    let pids: [pid_t]

    var description: String {
        if pids.isEmpty { return "no process was attached: interrupted" }
        return "none of the \(pids.count) processes could be hooked (PID \(pids.map(String.init).joined(separator: ", "))); see the errors above"
    }
}
