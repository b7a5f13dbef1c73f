import Injector
import RemoteTramp

/// What each feature (--count, --trace, --override, programs) links at a function, and the
/// runtime state it needs: timing blocks, override settings, the trace ring.
extension HookSession {
    /// The links one request needs at one function. Data the runtime programs read (timing
    /// blocks, override settings, trace ring, filters) is in place before the links go live.
    func link(_ request: HookRequest, to f: FunctionSymbol, into hook: inout Hook, _ change: HookTransaction) throws {
        let modifiers = request.modifiers
        let filter = try modifiers.filter.map(callFilter)
        func attach(_ kind: ProgramKind, _ spec: ProgramSpec, cookie: UInt64 = 0, raw: Bool = false) throws -> Link {
            let l = try change.link(kind, spec, to: f, cookie: cookie, raw: raw)
            hook.links.append(l)
            return l
        }
        switch request.feature {
        case .program(let kind, let spec, let cookie, let raw):
            hook.programLinks.insert(try attach(kind, spec, cookie: cookie, raw: raw).id)
        case .count:
            // Filters, keys and value histograms are runtime programs: a process the runtime
            // cannot be loaded into cannot have them (the error says why).
            if !modifiers.isEmpty { try configureRuntime() }
            if try !modifiers.isEmpty || countsAreTimed() {
                try linkMarks(change)
                let (timed, links) = try TimedCount.link(f, change, filter: filter)
                hook.links += links
                var entry = CountEntry(function: f, timed: timed, link: timed.entry)
                if let key = modifiers.key {
                    entry.keyed = try KeyedCount.link(f, key: key, change, filter: filter)
                    entry.top = modifiers.top
                    hook.links.append(entry.keyed!.link)
                }
                if let argument = modifiers.valueHistogram {
                    entry.values = try ValueHistogram.link(f, argument: argument, change, filter: filter)
                    hook.links.append(entry.values!.link)
                }
                hook.counts.append(entry)
            } else {
                hook.counts.append(CountEntry(function: f, timed: nil, link: try attach(.fentry, .count)))
            }
            if modifiers.byStack {
                try makeStackRing()
                hook.links.append(try StackSampleProgram.link(f, index: 0, change))
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
            if options.stacks { try makeStackRing() }
            hook.links += try TraceProgram.link(f, index: index, strings: strings, stack: options.stacks, change, filter: filter)
        case .override(let settings):
            let (program, l) = try Override.link(f, settings, change, filter: filter)
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

    /// A filter compiled into the process once per table and expression: every function and
    /// feature that has it shares it (an image then decides it once per call).
    func callFilter(_ e: FilterExpression) throws -> CallFilter {
        if filterCache.table !== table { filterCache = (table, [:]) }
        if let f = filterCache.filters[e] { return f }
        let f = try table.loadFilter(e)
        filterCache.filters[e] = f
        return f
    }

    func configureRuntime() throws {
        if runtimeConfigured { return }
        try table.configureRuntime()
        runtimeConfigured = true
    }

    /// The --by table of a counted function, its keys named (a caller by its function).
    func keyTable(_ c: CountEntry) -> KeyTable? {
        guard let keyed = c.keyed else { return nil }
        let r = keyed.read(table)
        let rows = r.counts.filter { $0.value > 0 }.map { key, count -> KeyTable.Row in
            switch keyed.key {
            case .caller: KeyTable.Row(key: .string(symbols.name(ofReturnAddress: key)), count: count)
            case .threadID: KeyTable.Row(key: .unsigned(key), count: count)
            default: KeyTable.Row(key: .signed(Int64(bitPattern: key)), count: count)
            }
        }
        return KeyTable(function: c.function, by: c.keyText, rows: KeyTable.ranked(rows, top: c.top), overflow: r.overflow)
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
        var row = CountTable.Row(function: c.function, calls: r.calls, nsecs: r.nsecs, misses: linkStats.misses, timed: true,
                                 histogram: r.histogram)
        if let v = c.values {
            row.valueHistogram = v.read(table)
            row.valueArgument = v.argument
        }
        return row
    }
}
