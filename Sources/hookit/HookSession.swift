import CPtrace
import Glibc
import Injector
import RemoteTramp

/// One hook request group as the user added it: a hook id for the session, with the links it
/// made (one or two per matching function) and what its features report.
struct Hook {
    let id: Int
    let text: String
    var links: [Link]
    var counts: [CountEntry] = []
    var overrides: [OverrideEntry] = []
    /// Link ids of the user's own programs (--prog, --replace): reported per link.
    var programLinks: Set<Int> = []
}

/// A counted function: a timing block of the runtime (calls, ns, histogram), or the built-in
/// counter's link when time is off or the runtime cannot run in the process.
struct CountEntry {
    let function: FunctionSymbol
    let block: UInt64?
    let link: Link
}

struct OverrideEntry {
    let function: FunctionSymbol
    let settings: OverrideSettings
    let config: UInt64
}

/// What an add hooked and refused, per pattern: functions a pattern matched that cannot be
/// hooked safely (too short, a branch back into the bytes to patch, patched by something else,
/// ...) are left alone and reported; the others are hooked.
struct AddReport {
    struct Refusal { let function: String, pattern: String, request: String, reason: String }
    struct Pattern { let request: String, hooked: Int, refused: Int }
    var refused: [Refusal] = []
    var patterns: [Pattern] = []
}

extension TrampolineError {
    /// Why one function of a pattern is refused, when it is refused rather than failing the add.
    var refusalReason: String? {
        switch self {
        case .cannotPatch(_, let reason): return reason
        case .foreignPatch: return "\(self)"
        default: return nil
        }
    }
}

/// Options of a session that are not hooks.
struct SessionOptions {
    var table = TrampolineTable.Options()
    var signatures: [Signature] = []
    var interval: Double?
    var histogram = false
    var keepReplacements = false
    var chromeTrace: String?
}

/// The attach → hook → wait → detach life cycle of `hookit attach` / `hookit run`, and the live
/// add/remove of hooks of an interactive session. All hooking logic lives in RemoteTramp; this
/// only drives it and reports.
final class HookSession {
    let tracee: Tracee
    let table: TrampolineTable
    let output: Output
    let options: SessionOptions
    private(set) var symbols: SymbolTable
    private(set) var hooks: [Hook] = []
    private var nextHookID = 1
    /// The trace ring, made at the first --trace; traced functions by index (the cookie).
    private var ring: TraceRing?
    private var traced: [(label: String, signature: Signature?)] = []
    private var traceIndex: [UInt64: Int] = [:]
    private var traceFile: ChromeTrace?
    private(set) var tracedCalls: UInt64 = 0
    /// Events reserved in the ring but never completed (their thread died or was stopped there).
    private var unpublished: UInt64 = 0
    /// nil until decided: whether counts are timed (the runtime could be loaded).
    private var timedCounts: Bool?
    private var runtimeConfigured = false
    private let clock: TickClock
    private var nextInterval: Double?

    /// Attaches (or takes a spawned tracee, held at its main), creates the trampoline table and
    /// adds `requests` (if any) as the first hook. Returns with the tracee running.
    init(pid: pid_t, requests: [HookRequest], options: SessionOptions, output: Output, spawned: Tracee? = nil) throws {
        self.output = output
        self.options = options
        if spawned == nil { try Preflight.check(pid: pid, forAttach: true) }
        // Symbols first: reading them needs no stop.
        symbols = try SymbolTable(pid: pid)
        for r in requests { _ = try symbols.resolve([r.pattern]) }   // bad patterns fail before attaching
        if let path = options.chromeTrace { traceFile = try ChromeTrace(path: path, pid: pid) }
        tracee = try spawned ?? Tracee.attach(pid: pid)
        var tableOptions = options.table
        tableOptions.runtimeLibrary = Self.runtimeLibraryPath()
        table = TrampolineTable(tracee: tracee, symbols: symbols, options: tableOptions)
        clock = TickClock()
        do {
            // A spawned program waits at main until its hooks are in (add resumes it).
            if tracee.held && requests.isEmpty { try tracee.resumeWorld() }
            var report = AddReport()
            if !requests.isEmpty {
                report = try add(requests, text: requests.map(\.text).joined(separator: " ")).report
            }
            output.attached(functions: table.hookedFunctions.count, links: table.links.count, report: report,
                            stop: tracee.stopStats, codeUsed: table.codeBytesUsed, codeMapped: table.codeBytesMapped)
        } catch {
            // Cleaning up is not to be cut short by the signal that may have caused the failure.
            hk_interrupt_signal = 0
            if tracee.exited { throw error }
            _ = table.detach(waitSeconds: 1)
            tracee.detach()
            throw error
        }
        nextInterval = options.interval.map { Clock.seconds() + $0 }
    }

    /// Links every function the requests match, live: entries are read and relocated while the
    /// process runs, then one stop links and patches them all. A function that cannot be hooked
    /// safely does not sink a pattern (it is reported), but a pattern that hooks nothing is an
    /// error, and then nothing of this add stays. Called and returns with the tracee running.
    func add(_ requests: [HookRequest], text: String) throws -> (hook: Hook, report: AddReport) {
        // Aliases (memcpy and __memcpy, ...) are one function: hooked once, under its first name.
        let plan = try requests.map { r -> (HookRequest, [FunctionSymbol]) in
            var seen = Set<UInt64>()
            return (r, try resolve(r.pattern).filter { seen.insert($0.address).inserted })
        }
        _ = table.prepare(plan.flatMap { $0.1 })
        if !tracee.held { try tracee.stopWorld() }
        var hook = Hook(id: nextHookID, text: text, links: [])
        var report = AddReport()
        do {
            for (request, functions) in plan {
                var linked = 0, refused = 0
                for f in functions {
                    do {
                        try link(request.feature, to: f, into: &hook)
                        linked += 1
                    } catch let e as TrampolineError {
                        guard functions.count > 1, let reason = e.refusalReason else { throw e }
                        report.refused.append(.init(function: "\(f.module):\(f.name)", pattern: request.pattern.text, request: request.text, reason: reason))
                        refused += 1
                    }
                }
                if linked == 0 { throw TrampolineError.cannotPatch(function: request.pattern.text, reason: "every matching function was refused") }
                report.patterns.append(.init(request: request.text, hooked: linked, refused: refused))
            }
            try table.update()
        } catch {
            for l in hook.links { try? table.unlink(l.id) }
            try? table.update()
            try? tracee.resumeWorld()
            throw error
        }
        try tracee.resumeWorld()
        nextHookID += 1
        hooks.append(hook)
        return (hook, report)
    }

    /// The links one feature needs at one function. Data the runtime programs read (timing
    /// blocks, override settings, trace ring) is in place before the links go live.
    private func link(_ feature: Feature, to f: FunctionSymbol, into hook: inout Hook) throws {
        func attach(_ kind: ProgramKind, _ spec: ProgramSpec, cookie: UInt64 = 0) throws -> Link {
            let l = try table.link(kind, spec, to: f, cookie: cookie)
            hook.links.append(l)
            return l
        }
        switch feature {
        case .program(let kind, let spec, let cookie):
            hook.programLinks.insert(try attach(kind, spec, cookie: cookie).id)
        case .count:
            if try countsAreTimed() {
                let block = try table.allocateProgramData(cells: CountTable.cells)
                // Calls and misses are the entry program's: a nested run it skipped is a call not counted.
                let enter = try attach(.fentry, .runtime(symbol: "hookit_rt_time_enter"), cookie: block)
                _ = try attach(.fexit, .runtime(symbol: "hookit_rt_time_exit"), cookie: block)
                hook.counts.append(CountEntry(function: f, block: block, link: enter))
            } else {
                hook.counts.append(CountEntry(function: f, block: nil, link: try attach(.fentry, .count)))
            }
        case .trace:
            try makeRing()
            let index = traceIndex[f.address] ?? traced.count
            if index == traced.count {
                traced.append(("\(f.module):\(f.name)", Signature.lookup(f.name, given: options.signatures)))
                traceIndex[f.address] = index
            }
            let mask = traced[index].signature?.stringMask ?? 0
            _ = try attach(.fentry, .runtime(symbol: "hookit_rt_trace_enter"))
            _ = try attach(.fexit, .runtime(symbol: "hookit_rt_trace_exit"), cookie: UInt64(index) | mask << 32)
        case .override(let settings):
            try configureRuntime()
            let config = try table.allocateProgramData(cells: settings.cells.count)
            table.writeProgramData(config, settings.cells)
            _ = try attach(.fmodRet, .runtime(symbol: "hookit_rt_override"), cookie: config)
            hook.overrides.append(OverrideEntry(function: f, settings: settings, config: config))
        }
    }

    /// Counts take time when time is on and the runtime loads (not in a static process: then
    /// the built-in counter counts calls alone, and says so once).
    private func countsAreTimed() throws -> Bool {
        if let t = timedCounts { return t }
        var timed = options.table.collectTime
        if timed {
            do { try configureRuntime() } catch {
                output.problem("counting calls without time: \(error)")
                timed = false
            }
        }
        timedCounts = timed
        return timed
    }

    private func configureRuntime() throws {
        if runtimeConfigured { return }
        try table.configureRuntime()
        runtimeConfigured = true
    }

    private func makeRing() throws {
        if ring != nil { return }
        try configureRuntime()
        ring = try TraceRing(table: table)
    }

    /// Unlinks every program of a hook, live; returns its statistics summed over its links.
    func remove(_ id: Int) throws -> (hook: Hook, stats: LinkStats) {
        guard let i = hooks.firstIndex(where: { $0.id == id }) else { throw TrampolineError.unknownLink(id: id) }
        try tracee.stopWorld()
        defer { try? tracee.resumeWorld() }
        let hook = hooks[i]
        let stats = total(hook)
        for l in hook.links { try table.unlink(l.id) }
        try table.update()
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

    func countStats(_ c: CountEntry) -> CountTable.Row {
        let linkStats = (try? table.stats(c.link)) ?? LinkStats(calls: 0, nsecs: 0, misses: 0)
        guard let block = c.block else {
            return CountTable.Row(function: c.function, calls: linkStats.calls, nsecs: 0, misses: 0, timed: false, histogram: [])
        }
        let cells = table.readProgramData(block, cells: CountTable.cells)
        return CountTable.Row(function: c.function, calls: cells[0], nsecs: cells[1], misses: linkStats.misses, timed: true,
                              histogram: Array(cells[2...]))
    }

    /// Functions of a pattern; a module the process loaded after attach is found by reading
    /// its modules again.
    private func resolve(_ pattern: SymbolPattern) throws -> [FunctionSymbol] {
        do {
            return try symbols.resolve([pattern])
        } catch InjectorError.noModule, InjectorError.noSymbol {
            symbols = try SymbolTable(pid: tracee.pid, memory: tracee.memory)
            table.useSymbols(symbols)
            return try symbols.resolve([pattern])
        }
    }

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
        while hk_interrupt_signal == 0 {
            if let d = duration, Clock.seconds() - start >= d { break }
            do {
                try service(seconds: 0.05)
            } catch {
                output.problem("\(error)")
                break
            }
            if tracee.exited { break }
        }
    }

    /// One round of servicing: the tracee's events for up to `seconds` (less while tracing, so
    /// the ring is read often), then the ring and a due count table.
    func service(seconds: Double) throws {
        try tracee.pump(seconds: ring == nil ? seconds : min(seconds, 0.01))
        drainTrace()
        if let due = nextInterval, Clock.seconds() >= due, let interval = options.interval {
            printCounts(final: false)
            nextInterval = due + interval
        }
    }

    /// Prints the trace events that are complete.
    func drainTrace() {
        guard let ring else { return }
        while !output.backlogged {
            let events = ring.drain(max: 4096)
            if events.isEmpty { return }
            tracedCalls += UInt64(events.count)
            for e in events {
                let t = traced[e.function]
                let call = TracedCall(event: e, function: t.label, signature: t.signature, clock: clock)
                output.call(call)
                traceFile?.add(call)
            }
        }
    }

    private func printCounts(final: Bool) {
        let rows = hooks.flatMap { $0.counts }.map(countStats)
        if rows.isEmpty { return }
        output.counts(rows, histogram: options.histogram, elapsed: clock.elapsedSeconds, final: final)
    }

    // MARK: - detach

    /// Restores the tracee and reports statistics. Returns false when something was left behind.
    /// A process that exited (expected by `hookit run`) is reported with its exit status.
    func detach(exitExpected: Bool = false) -> Bool {
        // A termination signal asked for this detach; it must not also cut the detach short.
        // (Another one arriving from here on still interrupts it.)
        hk_interrupt_signal = 0
        if tracee.exited {
            // The counters and the ring are shared memory: still readable.
            report(programs: [], exited: true)
            if !exitExpected { output.problem("the process exited") }
            output.exited(status: tracee.exitStatus, traced: ring.map { (tracedCalls, $0.dropped + unpublished) })
            traceFile?.close()
            output.finish()
            return exitExpected
        }
        do { try tracee.stopWorld() } catch { output.problem("\(error)") }
        let programStats = hooks.flatMap { h in h.links.filter { h.programLinks.contains($0.id) } }.map { ($0, try? table.stats($0)) }
        let kept = options.keepReplacements ? Set(programStats.filter { $0.0.kind == .replace }.map(\.0.function.address)) : []
        let report = table.detach(keeping: kept)
        finishTrace(tableUnmapped: report.unmapped || !kept.isEmpty)
        let injector = tracee.detach()
        self.report(programs: programStats, exited: false)
        for p in report.problems + injector.problems { output.problem(p) }
        output.detached(restored: report.restored, kept: report.kept, leftMapped: report.leftMapped, stop: injector.stopStats,
                        traced: ring.map { (tracedCalls, $0.dropped + unpublished) })
        traceFile?.close()
        output.finish()
        return report.problems.isEmpty && injector.problems.isEmpty
    }

    /// The last events: every writer has left its program once the table is detached, so a
    /// slot still reserved but unpublished after a short wait never will be: it counts as
    /// dropped.
    private func finishTrace(tableUnmapped: Bool) {
        guard let ring else { return }
        drainAll(ring)
        if tableUnmapped { ring.close(tracee: tracee) }
    }

    private func drainAll(_ ring: TraceRing) {
        var deadline = Clock.seconds() + 0.2
        while true {
            output.finish()
            let before = tracedCalls
            drainTrace()
            if ring.pending == 0 { break }
            if tracedCalls != before { deadline = Clock.seconds() + 0.2; continue }
            if Clock.seconds() >= deadline { unpublished = ring.pending; break }
            usleep(1000)
        }
        output.finish()
    }

    private func report(programs: [(Link, LinkStats?)], exited: Bool) {
        if exited, let ring { drainAll(ring) }
        printCounts(final: true)
        for h in hooks {
            for o in h.overrides {
                let cells = table.readProgramData(o.config, cells: 6)
                output.override(o, calls: cells[4], injected: cells[5])
            }
        }
        if !programs.isEmpty { output.stats(programs) }
    }
}

/// TSC ticks (the runtime's clock) to CLOCK_MONOTONIC nanoseconds, from one reading of both.
struct TickClock {
    let ticks0: UInt64
    let nanos0: UInt64

    init() {
        ticks0 = hk_rdtsc()
        nanos0 = Clock.now()
    }

    func nanoseconds(ticks: UInt64) -> UInt64 {
        let delta = Int64(bitPattern: ticks &- ticks0)
        let ns = Double(delta) * 1e9 / TrampolineTable.tscHz
        return UInt64(max(0, Int64(nanos0) + Int64(ns)))
    }

    var elapsedSeconds: Double { Double(Clock.now() - nanos0) / 1e9 }
}
