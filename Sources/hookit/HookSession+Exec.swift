import Injector
import RemoteTramp

/// A process that runs execve keeps its session (issue 17, part 3): the new image is run to its
/// main, gets a new trampoline table (the old one's addresses mean nothing in it) and every hook
/// the session has, and an `exec` event says so. Counts and trace totals carry over: the old
/// image's counters and ring are shared memory, still mapped in hookit.
extension HookSession {
    /// Follows a held exec stop, if there is one. A new image that cannot be followed (32-bit,
    /// no main, ...) is reported and runs on unhooked.
    func followExec() {
        guard tracee.execPending else { return }
        carryOverOldImage()
        let old = hooks
        do {
            try tracee.runExecedImageToMain()
            symbols = try SymbolTable(pid: tracee.pid, memory: tracee.memory, mangledNames: options.mangledNames)
        } catch {
            output.problem("the process ran exec; its new image runs without hooks: \(error)")
            tracee.releaseExec()
            hooks = []
            try? tracee.resumeWorld()
            return
        }
        knownModules = Set(symbols.modules.map(Self.moduleKey))
        table = TrampolineTable(tracee: tracee, symbols: symbols, options: Self.tableOptions(options))
        hooks = []
        var report = AddReport()
        for h in old {
            do {
                let r = try add(h.requests, text: h.text, resume: false, id: h.id).report
                report.refused += r.refused
                report.patterns += r.patterns
            } catch {
                output.problem("after exec, \(h.text): \(error)")
            }
        }
        followLoaderIfUseful()
        output.exec(pid: tracee.pid, path: tracee.programPath, functions: userFunctions, report: report)
        do { try tracee.resumeWorld() } catch { output.problem("\(error)") }
    }

    /// What the old image counted and traced, read before its table is dropped. Its threads are
    /// gone, so a trace event one of them reserved and never completed is lost: it counts as
    /// dropped. The old table is never detached: nothing of it may touch the new image.
    private func carryOverOldImage() {
        if let r = ring {
            drainAll(r)
            endOpenCalls(.exec)
            carriedDropped += r.dropped + unpublished
            unpublished = 0
            tracedBefore = true
            ring = nil
        }
        stacks?.carryOver(symbols: symbols)
        carriedCounts = Self.merged(carriedCounts, hooks.flatMap(\.counts).map(countStats))
        try? table.stopFollowingLoader()       // after an exec: closes hookit's end only
        tracee.wakeDescriptor = -1
        traced = []
        traceIndex = [:]
        markLinks = nil
        loaderUnfollowable = false
        timedCounts = nil
        runtimeConfigured = false
    }

    /// Rows of the same function (by label) added up: one row per function for the session,
    /// whichever images counted it.
    static func merged(_ a: [CountTable.Row], _ b: [CountTable.Row]) -> [CountTable.Row] {
        guard !a.isEmpty else { return b }
        var out = a
        for r in b {
            guard let i = out.firstIndex(where: { $0.label == r.label }) else { out.append(r); continue }
            let o = out[i]
            let hist = o.histogram.count >= r.histogram.count
                ? zip(o.histogram, r.histogram + Array(repeating: 0, count: o.histogram.count - r.histogram.count)).map { $0 + $1 }
                : zip(r.histogram, o.histogram + Array(repeating: 0, count: r.histogram.count - o.histogram.count)).map { $0 + $1 }
            out[i] = CountTable.Row(function: r.function, calls: o.calls + r.calls, nsecs: o.nsecs + r.nsecs, misses: o.misses + r.misses,
                                    timed: o.timed || r.timed, histogram: hist)
        }
        return out
    }
}
