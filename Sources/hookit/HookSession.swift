import Glibc
import Injector
import RemoteTramp

/// The attach → hook → wait → detach life cycle of `hookit attach` / `hookit run`, and the live
/// add/remove of hooks of an interactive session. All hooking logic lives in RemoteTramp; this
/// only drives it and reports.
final class HookSession {
    let tracee: Tracee
    /// The current image's trampolines (a new table after each exec).
    var table: TrampolineTable
    let output: Output
    let options: SessionOptions
    var symbols: SymbolTable
    var hooks: [Hook] = []
    /// Requests whose module is not loaded yet, by text, in the order given: applied when the
    /// module is mapped (see HookSession+Loader); those left at the end never matched.
    var pending: [String] = []
    /// Modules already looked at ("path@start"), so a loader notification finds the new ones.
    var knownModules: Set<String> = []
    /// The loader of this image cannot be followed (said once).
    var loaderUnfollowable = false
    /// The id the next hook gets (a set of processes gives its own ids: see ProcessSet).
    private(set) var nextHookID = 1
    /// The trace ring, made at the first --trace; traced functions by index (the cookie).
    var ring: TraceRing?
    var traced: [(label: String, signature: Signature?)] = []
    var traceIndex: [UInt64: Int] = [:]
    /// --stack, --by stack: the stack ring and what was unwound from it (UserStacks.swift).
    var stacks: UserStacks?
    let exports: Exports
    /// The exports are this session's alone (not shared by a ProcessSet): it closes them.
    private let ownsExports: Bool
    var tracedCalls: UInt64 = 0
    /// Traced calls from entry to end (see HookSession+Calls).
    var callStacks = CallStacks()
    /// Threads seen exiting whose calls still open end once their last events are read.
    var exitedThreads: [ExitedThread] = []
    /// The marks' links (marks.c's hookit_rt_mark), made with the first --trace or timed --count.
    var markLinks: [Link]?
    /// Calls whose entry events were reserved in the ring but never read (never completed:
    /// their thread died or was stopped there; or left unread behind a stalled stdout).
    var unpublished: UInt64 = 0
    /// End events were left unread at the last drain: calls still open then ended unknown.
    var endingsLost = false
    /// Counts and lost trace events of images the process left by exec (see HookSession+Exec).
    var carriedCounts: [CountTable.Row] = []
    var carriedDropped: UInt64 = 0
    var tracedBefore = false
    /// Requests that matched a function at some point (in any image): never pending again.
    var matched: Set<String> = []
    /// Children the process forked, followed until they exit or exec (see HookSession+Fork).
    var children: [FollowedChild] = []
    /// Sessions of children that ran exec: their new images, hooked as this process is.
    var execedChildren: [HookSession] = []
    /// Which process each thread seen belongs to, for the trace's `pid`.
    var processOfThread: [UInt32: pid_t] = [:]
    /// nil until decided: whether counts are timed (the runtime could be loaded).
    var timedCounts: Bool?
    var runtimeConfigured = false
    /// --if filters loaded into the process, per expression, for the current table.
    var filterCache: (table: TrampolineTable?, filters: [FilterExpression: CallFilter]) = (nil, [:])
    let clock: TickClock
    private var nextInterval: Double?

    /// Attaches (or takes a spawned tracee, held at its main), creates the trampoline table and
    /// adds `requests` (if any) as the first hook. Returns with the tracee running.
    /// `exports`: the files several sessions share (ProcessSet); nil: the session opens its own.
    ///
    /// `inherited`: hooks of another session to apply too, each on its own (a child that ran
    /// exec gets its parent's): one that matches nothing here is said and left out.
    init(pid: pid_t, requests: [HookRequest], options: SessionOptions, output: Output, spawned: Tracee? = nil,
         exports: Exports? = nil, inherited: [Hook] = []) throws {
        self.output = output
        self.options = options
        let checked = spawned == nil ? try Preflight.check(pid: pid, forAttach: true) : nil
        // Symbols first: reading them needs no stop.
        symbols = try SymbolTable(pid: pid, mangledNames: options.mangledNames)
        // Bad patterns fail before attaching; a module not loaded yet is waited for.
        for r in requests {
            do { _ = try symbols.resolve([r.pattern]) }
            catch InjectorError.noModule {}
            catch InjectorError.noSymbol where Self.mayMatchLater(r.pattern) {}
        }
        knownModules = Set(symbols.modules.map(Self.moduleKey))
        self.exports = try exports ?? Exports(options: options, output: output)
        ownsExports = exports == nil
        // Seized, not stopped: the world stops only for the pokes (TrampolineTable.update).
        tracee = try spawned ?? Tracee.attachRunning(pid: pid, checked: checked, followForks: options.followForks)
        tracee.followsExec = true
        table = TrampolineTable(tracee: tracee, symbols: symbols, options: Self.tableOptions(options))
        clock = TickClock()
        callStacks = CallStacks(processOf: { [unowned self] tid in self.processOfThread[tid] ?? self.tracee.pid })
        do {
            // A spawned program waits at main until its hooks are in and reported, so that what
            // it prints comes after the `attached` line.
            let wasSpawned = spawned != nil
            var report = AddReport()
            if !requests.isEmpty {
                report = try add(requests, text: requests.map(\.text).joined(separator: " "), resume: !wasSpawned).report
            }
            for h in inherited {
                do {
                    let r = try add(h.requests, text: h.text, resume: !wasSpawned, id: h.id).report
                    report.refused += r.refused
                    report.patterns += r.patterns
                } catch {
                    output.problem("process \(pid), \(h.text): \(error)")
                }
            }
            output.attached(pid: tracee.pid, functions: userFunctions, links: userLinks, report: report,
                            stop: tracee.stopStats, codeUsed: table.codeBytesUsed, codeMapped: table.codeBytesMapped)
            self.exports.add(process: tracee.pid)
            if tracee.held { try tracee.resumeWorld() }
        } catch {
            // Cleaning up is not to be cut short by the signal that may have caused the failure.
            Interruption.clear()
            // A spawned program is killed by the caller while still held: it never runs unhooked.
            if tracee.exited || spawned != nil { throw error }
            _ = table.detach(waitSeconds: 1)
            tracee.detach()
            throw error
        }
        nextInterval = options.interval.map { Clock.seconds() + $0 }
    }

    /// Links every function the requests match, live, in one transaction: entries are read,
    /// relocated and linked while the process runs, then one stop patches them all. A function that cannot be hooked
    /// safely does not sink a pattern (it is reported), but a pattern that hooks nothing is an
    /// error, and then nothing of this add stays. Returns with the tracee running (held, with
    /// `resume` false: a spawned program waiting at main).
    func add(_ requests: [HookRequest], text: String, resume: Bool = true, id: Int? = nil) throws -> (hook: Hook, report: AddReport) {
        // Aliases (memcpy and __memcpy, ...) are one function: hooked once, under its first name.
        // So is a function that several requests of one feature match (by its mangled and by its
        // demangled name, say): the first request links it, a later one (`earlier`: matched by
        // an earlier request) shares the outcome, hooked or refused. A request whose module is
        // not loaded yet waits for it (`waiting`).
        var groups: [(feature: Feature, modifiers: HookModifiers, addresses: Set<UInt64>)] = []
        var waiting: [HookRequest] = []
        let plan = try requests.compactMap { r -> (request: HookRequest, group: Int, functions: [FunctionSymbol], earlier: [FunctionSymbol])? in
            guard let found = try resolve(r.pattern) else { waiting.append(r); return nil }
            let g = groups.firstIndex { $0.feature == r.feature && $0.modifiers == r.modifiers } ?? groups.count
            if g == groups.count { groups.append((r.feature, r.modifiers, [])) }
            var seen = Set<UInt64>()
            var functions: [FunctionSymbol] = [], earlier: [FunctionSymbol] = []
            for f in found where seen.insert(f.address).inserted {
                if groups[g].addresses.insert(f.address).inserted { functions.append(f) } else { earlier.append(f) }
            }
            return (r, g, functions, earlier)
        }
        let change = table.begin()
        change.prepare(plan.flatMap(\.functions))
        var hook = Hook(id: id ?? nextHookID, text: text, links: [], requests: requests)
        var report = AddReport()
        var refusals: [Int: [UInt64: String]] = [:]     // group → function address → reason
        do {
            for (request, group, functions, earlier) in plan {
                var linked = 0, refused = 0
                func refuse(_ f: FunctionSymbol, _ reason: String) {
                    report.refused.append(.init(function: f.label, pattern: request.pattern.text, request: request.text, reason: reason))
                    refused += 1
                }
                for f in functions {
                    do {
                        try link(request, to: f, into: &hook, change)
                        linked += 1
                    } catch let e as TrampolineError {
                        guard functions.count + earlier.count > 1, let reason = e.refusalReason else { throw e }
                        refusals[group, default: [:]][f.address] = reason
                        refuse(f, reason)
                    }
                }
                for f in earlier {
                    if let reason = refusals[group]?[f.address] { refuse(f, reason) } else { linked += 1 }
                }
                if linked == 0 { throw TrampolineError.cannotPatch(function: request.pattern.text, reason: "every matching function was refused") }
                report.patterns.append(.init(request: request.text, hooked: linked, refused: refused))
            }
            try change.commit()
        } catch {
            change.rollback()
            if resume { try? tracee.resumeWorld() }
            throw error
        }
        if resume { try tracee.resumeWorld() }
        notePending(waiting, matched: plan.map(\.request.text))
        nextHookID = max(nextHookID, hook.id + 1)
        hooks.append(hook)
        followLoaderIfUseful()
        return (hook, report)
    }

    /// Requests that wait for their module, said once each (the `loaded` event says when one
    /// applies); a request that matched once, in any image, never waits again.
    private func notePending(_ waiting: [HookRequest], matched now: [String]) {
        for r in waiting where !matched.contains(r.text) && !pending.contains(r.text) {
            pending.append(r.text)
            output.pending(request: r.text, module: r.pattern.module ?? "", pid: tracee.pid)
        }
        matched.formUnion(now)
        pending.removeAll { matched.contains($0) }
    }

    /// Unlinks every program of a hook, live; returns its statistics summed over its links.
    func remove(_ id: Int) throws -> (hook: Hook, stats: LinkStats) {
        guard let i = hooks.firstIndex(where: { $0.id == id }) else { throw TrampolineError.unknownLink(id: id) }
        let hook = hooks[i]
        let stats = total(hook)
        let change = table.begin()
        for l in hook.links { try change.unlink(l.id) }
        try change.commit()
        hooks.remove(at: i)
        drainTrace()
        return (hook, stats)
    }

    /// Statistics of a hook: calls of its counted functions (with their time) and runs of its
    /// programs.
    func total(_ hook: Hook) -> LinkStats {
        var sum = LinkStats(calls: 0, nsecs: 0, misses: 0)
        let counted = Set(hook.counts.map(\.link.id))
        for c in hook.counts {
            let s = countStats(c)
            sum.calls += s.calls; sum.nsecs += s.nsecs; sum.misses += s.misses
        }
        for l in hook.links where !counted.contains(l.id) && hook.programLinks.contains(l.id) {
            if let s = try? table.stats(l) { sum.calls += s.calls; sum.nsecs += s.nsecs; sum.misses += s.misses }
        }
        return sum
    }

    /// Functions of a pattern; a module the process loaded after attach is found by reading
    /// its modules again. nil: no module matches yet (the request waits for one).
    private func resolve(_ pattern: SymbolPattern) throws -> [FunctionSymbol]? {
        do {
            return try symbols.resolve([pattern])
        } catch InjectorError.noModule, InjectorError.noSymbol {
            symbols = try SymbolTable(pid: tracee.pid, memory: tracee.memory, mangledNames: options.mangledNames)
            table.useSymbols(symbols)
            do { return try symbols.resolve([pattern]) }
            catch InjectorError.noModule { return nil }
            catch InjectorError.noSymbol where Self.mayMatchLater(pattern) { return nil }
        }
    }

    /// A pattern that matches no function now waits for a library loaded later when its module
    /// part may name one that is not loaded (none, or a glob); a module named exactly and loaded
    /// without such a function is a mistake, said at once.
    static func mayMatchLater(_ p: SymbolPattern) -> Bool {
        guard let m = p.module else { return true }
        return m.contains(where: { "*?[".contains($0) })
    }

    static func tableOptions(_ options: SessionOptions) -> TrampolineTable.Options {
        var o = options.table
        o.runtimeLibrary = runtimeLibraryPath()
        return o
    }

    static func moduleKey(_ m: Module) -> String { "\(m.path)@\(m.start)" }

    /// libhookit_rt.so is built next to the hookit executable.
    static func runtimeLibraryPath() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        let exe = n > 0 ? String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        let dir = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return dir + "/libhookit_rt.so"
    }

    // MARK: - while attached

    /// Services the tracee's events (signals, new threads) and prints what arrives (trace
    /// events, count tables at each interval) until the duration passes, a termination signal
    /// arrives or the process exits.
    func runUntilDone(duration: Double?) {
        let start = Clock.seconds()
        while !Interruption.requested {
            if let d = duration, Clock.seconds() - start >= d { break }
            do {
                try service(seconds: 0.05)
            } catch {
                output.problem("\(error)")
                break
            }
            if familyExited { break }
        }
    }

    /// One round of servicing: the tracee's events for up to `seconds` (less while tracing, so
    /// the ring is read often), then the ring and a due count table.
    func service(seconds: Double) throws {
        try tracee.pump(seconds: ring == nil && stacks == nil ? seconds : min(seconds, 0.01))
        output.pump()
        followExec()
        serviceLoader()
        serviceChildren()
        drainTrace()
        drainStackSamples()
        exports.tick()
        if let due = nextInterval, Clock.seconds() >= due, let interval = options.interval {
            printCounts(final: false)
            nextInterval = due + interval
        }
    }

    func printCounts(final: Bool) {
        let rows = Self.merged(carriedCounts, hooks.flatMap { $0.counts }.map(countStats))
        if rows.isEmpty { return }
        output.counts(rows, histogram: options.histogram, elapsed: clock.elapsedSeconds, final: final, pid: tracee.pid)
        output.keys(hooks.flatMap(\.counts).compactMap(keyTable), elapsed: clock.elapsedSeconds, final: final, pid: tracee.pid)
        if final { writeStackFiles() }
        exports.counts(rows, overrides: overrideCounts().map { .init(function: $0.label, injected: $0.injected) }, dropped: traceTotals?.dropped,
                       pid: tracee.pid)
    }

    // MARK: - detach

    /// Restores the tracee and reports statistics. Returns false when something was left behind.
    /// A process that exited (expected by `hookit run`) is reported with its exit status.
    func detach(exitExpected: Bool = false) -> Bool {
        // A termination signal asked for this detach; it must not also cut the detach short.
        // (Another one arriving from here on still interrupts it.)
        Interruption.clear()
        if tracee.exited {
            // Children first: once they are restored, nothing writes into the ring or the
            // counters any more, and the last drain sees everything.
            let family = detachChildren()
            table.processExited()
            // The counters and the ring are shared memory: still readable.
            report(programs: [], exited: true)
            if !exitExpected { output.problem(output.several ? "process \(tracee.pid) exited" : "the process exited") }
            for p in family { output.problem(p) }
            output.exited(pid: tracee.pid, status: tracee.exitStatus, traced: traceTotals, neverMatched: pending)
            if ownsExports { exports.close() }
            output.finish()
            return exitExpected
        }
        let programStats = hooks.flatMap { h in h.links.filter { h.programLinks.contains($0.id) } }.map { ($0, try? table.stats($0)) }
        let kept = options.keepReplacements ? Set(programStats.filter { $0.0.kind == .replace }.map(\.0.function.address)) : []
        let markOnly = markOnlyFunctions.count
        var report = table.detach(keeping: kept)
        report.restored -= min(markOnly, report.restored)    // the user's functions, as `attached` counted them
        // Children before the last drain: restored, they write no more calls into the ring.
        let family = detachChildren()
        finishTrace(tableUnmapped: report.unmapped || !kept.isEmpty)
        stacks?.close(tracee: tracee, unmap: report.unmapped || !kept.isEmpty, symbols: symbols)
        let injector = tracee.detach()
        self.report(programs: programStats, exited: false)
        for p in report.problems + family + injector.problems { output.problem(p) }
        output.detached(pid: tracee.pid, restored: report.restored, kept: report.kept, leftMapped: report.leftMapped,
                        stop: injector.stopStats, traced: traceTotals, neverMatched: pending)
        if ownsExports { exports.close() }
        output.finish()
        return report.problems.isEmpty && injector.problems.isEmpty
    }

    /// Events printed and events lost (ring full, or reserved and never completed).
    private var traceTotals: (calls: UInt64, dropped: UInt64)? {
        guard ring != nil || tracedBefore else { return nil }
        return (tracedCalls, (ring?.dropped ?? 0) + unpublished + carriedDropped)
    }

    /// The last events: every writer has left its program once the table is detached, so a
    /// slot still reserved but unpublished after a short wait never will be: it counts as
    /// dropped.
    private func finishTrace(tableUnmapped: Bool) {
        guard let ring else { return }
        drainAll(ring)
        endOpenCalls(.detached)
        ring.close(tracee: tracee, unmap: tableUnmapped)
    }

    /// With stdout stalled (see Output.finish) this ends within ~1 s: the events still in the
    /// ring are read and dropped, not waited for.
    func drainAll(_ ring: TraceRing) {
        var deadline = Clock.seconds() + 0.2
        while true {
            output.finish()
            let before = ring.pending
            drainTrace()
            if ring.pending == 0 { break }
            if ring.pending != before { deadline = Clock.seconds() + 0.2; continue }
            if Clock.seconds() >= deadline {
                drainTrace(final: true)            // what waits for a lost earlier event goes out
                // Left unread (stdout stalled) or never published: the calls whose entries
                // these are count as dropped; an end left here leaves its call's end unknown.
                let rest = ring.discardRest()
                unpublished = rest.entries
                endingsLost = rest.events > rest.entries
                break
            }
            usleep(1000)
        }
        output.finish()
    }

    private func report(programs: [(Link, LinkStats?)], exited: Bool) {
        if exited, let ring {
            drainAll(ring)
            endOpenCalls(.exit)
        }
        printCounts(final: true)
        for o in overrideCounts() { output.override(o.entry, calls: o.calls, injected: o.injected, pid: tracee.pid) }
        if !programs.isEmpty { output.stats(programs, timed: options.table.timePrograms, pid: tracee.pid) }
    }
}
