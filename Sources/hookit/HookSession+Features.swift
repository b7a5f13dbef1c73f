import Injector
import RemoteTramp

/// What each feature (--count, --trace, --override, programs) links at a function, and the
/// runtime state it needs: timing blocks, override settings, the trace ring.
extension HookSession {
    /// The links one feature needs at one function. Data the runtime programs read (timing
    /// blocks, override settings, trace ring) is in place before the links go live.
    func link(_ feature: Feature, to f: FunctionSymbol, into hook: inout Hook, _ change: HookTransaction) throws {
        func attach(_ kind: ProgramKind, _ spec: ProgramSpec, cookie: UInt64 = 0, raw: Bool = false) throws -> Link {
            let l = try change.link(kind, spec, to: f, cookie: cookie, raw: raw)
            hook.links.append(l)
            return l
        }
        switch feature {
        case .program(let kind, let spec, let cookie, let raw):
            hook.programLinks.insert(try attach(kind, spec, cookie: cookie, raw: raw).id)
        case .count:
            if try countsAreTimed() {
                try linkMarks(change)
                let (timed, links) = try TimedCount.link(f, change)
                hook.links += links
                hook.counts.append(CountEntry(function: f, timed: timed, link: timed.entry))
            } else {
                hook.counts.append(CountEntry(function: f, timed: nil, link: try attach(.fentry, .count)))
            }
        case .trace(let signatures):
            try makeRing()
            try linkMarks(change)
            let index = traceIndex[f.address] ?? traced.count
            if index == traced.count {
                traced.append((f.label, Signature.lookup(f, given: signatures + options.signatures)))
                traceIndex[f.address] = index
            }
            let strings = traced[index].signature?.strings ?? TraceProgram.Strings()
            hook.links += try TraceProgram.link(f, index: index, strings: strings, change)
        case .override(let settings):
            let (program, l) = try Override.link(f, settings, change)
            hook.links.append(l)
            hook.overrides.append(OverrideEntry(function: f, program: program))
        }
    }

    /// Counts take time when time is on and the runtime loads (not in a static process: then
    /// the built-in counter counts calls alone, and says so once).
    func countsAreTimed() throws -> Bool {
        if let t = timedCounts { return t }
        var timed = options.timeCounts
        if timed {
            do { try configureRuntime() } catch {
                output.problem("counting calls without time: \(error)")
                timed = false
            }
        }
        timedCounts = timed
        return timed
    }

    func configureRuntime() throws {
        if runtimeConfigured { return }
        try table.configureRuntime()
        runtimeConfigured = true
    }

    func makeRing() throws {
        if ring != nil { return }
        try configureRuntime()
        ring = try TraceRing(table: table)
    }

    func countStats(_ c: CountEntry) -> CountTable.Row {
        let linkStats = (try? table.stats(c.link)) ?? LinkStats(calls: 0, nsecs: 0, misses: 0)
        guard let timed = c.timed else {
            return CountTable.Row(function: c.function, calls: linkStats.calls, nsecs: 0, misses: 0, timed: false, histogram: [])
        }
        let r = timed.read(table)
        return CountTable.Row(function: c.function, calls: r.calls, nsecs: r.nsecs, misses: linkStats.misses, timed: true,
                              histogram: r.histogram)
    }
}
