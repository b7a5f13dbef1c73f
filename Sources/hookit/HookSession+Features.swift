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
                let block = try table.allocateProgramData(cells: CountTable.cells)
                // Calls and misses are the entry program's: a nested run it skipped is a call not counted.
                let enter = try attach(.fentry, .runtime(symbol: "hookit_rt_time_enter"), cookie: block)
                _ = try attach(.fexit, .runtime(symbol: "hookit_rt_time_exit"), cookie: block)
                hook.counts.append(CountEntry(function: f, block: block, link: enter))
            } else {
                hook.counts.append(CountEntry(function: f, block: nil, link: try attach(.fentry, .count)))
            }
        case .trace(let signatures):
            try makeRing()
            let index = traceIndex[f.address] ?? traced.count
            if index == traced.count {
                traced.append((f.label, Signature.lookup(f, given: signatures + options.signatures)))
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
        guard let block = c.block else {
            return CountTable.Row(function: c.function, calls: linkStats.calls, nsecs: 0, misses: 0, timed: false, histogram: [])
        }
        let cells = table.readProgramData(block, cells: CountTable.cells)
        return CountTable.Row(function: c.function, calls: cells[0], nsecs: cells[1], misses: linkStats.misses, timed: true,
                              histogram: Array(cells[2...]))
    }
}
