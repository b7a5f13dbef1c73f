/// The terminal's view of events: the one place that turns Event values into text. Some
/// events read best together (refusals grouped under their pattern, stats rows as one table),
/// so it renders a batch: the events one report made, in order.
struct EventRenderer {
    /// Trace lines show seconds since this moment (CLOCK_MONOTONIC ns).
    let start: UInt64
    /// Several processes are hooked: every line about one of them starts with `[PID] `, so a
    /// process's lines can be picked out (`grep '^\[1234\]'`); tables too, row by row.
    var several = false

    func lines(_ batch: [Event]) -> [String] {
        var out: [String] = []
        var refusals: [Event.Refused] = []
        var counts: [Event.Stats] = [], programs: [Event.Stats] = []
        for event in batch {
            let first = out.count
            switch event {
            case .refused(let r): refusals.append(r)
            case .stats(let s): if s.kind == "count" { counts.append(s) } else { programs.append(s) }
            case .attached(let a):
                out += patterns(a.patterns, refusals)
                out.append("attached \(a.links) program(s) to \(a.functions) function(s); world stopped \(ms(a.stoppedNs)) ms")
            case .added(let a):
                out += patterns(a.patterns, refusals)
                out.append("hook \(a.id): \(a.links) program(s) on \(a.functions) function(s) (\(a.hook))")
            case .call(let c): out.append(call(c)); out += stackLines(c)
            case .override(let o):
                let e = o.errno == 0 ? "" : " (errno \(o.errno))"
                out.append("override \(o.function): \(o.injected) of \(o.calls) call(s) returned \(o.value)\(e)")
            case .removed(let r): out.append("hook \(r.id) removed: \(r.calls) call(s), \(r.misses) miss(es)")
            case .list(let l):
                if l.hooks.isEmpty { out.append("no hooks") }
                for h in l.hooks { out.append("\(h.id)  \(h.hook)  calls \(h.calls)  misses \(h.misses)") }
            case .detached(let d):
                if let t = d.traced { out.append(tracedSummary(t, d.dropped ?? 0)) }
                out.append("detached: \(d.restored) function(s) restored; world stopped \(d.stops) time(s), longest \(ms(d.longestStopNs)) ms")
                if d.kept > 0 { out.append("kept \(d.kept) replacement(s) live in the process (--keep)") }
                for l in d.leftMapped { out.append("left mapped (a thread may still return into it): \(l)") }
                out += neverMatched(d.pending)
            case .exited(let e):
                if let t = e.traced { out.append(tracedSummary(t, e.dropped ?? 0)) }
                out.append("the process exited" + (e.status.map { " with status \($0)" } ?? ""))
                out += neverMatched(e.pending)
            case .error(let f): out.append("error: \(f.message)")
            case .pending(let p): out.append("\(p.request): waiting for \(p.module) to be loaded")
            case .loaded(let l):
                out += patterns(l.patterns, refusals)
                out.append("loaded \(l.path): \(l.functions) function(s) hooked before it ran")
            case .exec(let e):
                out += patterns(e.patterns, refusals)
                out.append("process \(e.pid) ran exec \(e.path): \(e.functions) function(s) hooked in the new image")
            case .fork(let f): out.append("process \(f.pid) forked \(f.child), which runs \(f.functions) hooked function(s)")
            case .keys(let k): out += keyTable(k)
            }
            tag(&out, from: first, event.pid)
        }
        if !counts.isEmpty { let first = out.count; out += countTable(counts); tag(&out, from: first, counts[0].pid) }
        if !programs.isEmpty { let first = out.count; out += programTable(programs); tag(&out, from: first, programs[0].pid) }
        return out
    }

    /// With several processes, the lines from `first` on are the process `pid`'s (blank lines,
    /// which only space tables, stay blank).
    private func tag(_ out: inout [String], from first: Int, _ pid: Int32?) {
        guard several, let pid else { return }
        for i in first..<out.count where !out[i].isEmpty { out[i] = "[\(pid)] " + out[i] }
    }

    /// `  12.345678  4242  target:add(2, 3) = 5  (1.2 µs)`, or `... target:parse(7) [unwound]
    /// (3.4 µs)` for a call that did not return; time since attach.
    private func call(_ c: Event.Call) -> String {
        let rel = Double(Int64(bitPattern: c.ts &- start)) / 1e9
        let r = c.ended != "returned" ? " [\(Self.endings[c.ended] ?? c.ended)]" : c.ret.isNone ? "" : " = \(c.ret.text)"
        let d = c.ns.map { "  (\(CountTable.duration($0)))" } ?? ""
        return "\(lpad(fixed(rel, 6), 12)) \(lpad("\(c.tid)", 7))  \(c.function)(\(c.args.map(\.text).joined(separator: ", ")))\(r)\(d)"
    }

    /// The requests whose module never came, at the end of a session.
    private func neverMatched(_ pending: [String]) -> [String] {
        pending.map { "never matched (no module it names was loaded): \($0)" }
    }

    /// How a call that did not return ended, in the text output.
    static let endings = ["unwound": "unwound", "thread_exit": "thread exit", "exit": "process exit", "exec": "exec",
                          "detached": "running at detach", "unknown": "end not recorded"]

    /// Per pattern: how many functions it hooked, and the refused ones grouped by reason.
    private func patterns(_ patterns: [Event.PatternReport], _ refused: [Event.Refused]) -> [String] {
        var out: [String] = []
        for p in patterns {
            out.append("\(p.request): \(p.hooked) function(s) hooked" + (p.refused > 0 ? ", \(p.refused) refused:" : ""))
            var reasons: [String: [String]] = [:]
            var order: [String] = []
            for r in refused where r.request == p.request {
                if reasons[r.reason] == nil { order.append(r.reason) }
                reasons[r.reason, default: []].append(r.function.split(separator: ":").last.map(String.init) ?? r.function)
            }
            for reason in order {
                let names = reasons[reason]!
                let shown = names.prefix(8).joined(separator: ", ") + (names.count > 8 ? ", ... (\(names.count - 8) more)" : "")
                out.append("  \(names.count) × \(reason): \(shown)")
            }
        }
        return out
    }

    /// The --count table, and with --hist a bar chart per timed function (bpftrace's hist()).
    private func countTable(_ rows: [Event.Stats]) -> [String] {
        let final = rows.allSatisfy(\.final)
        var out = [final ? "" : "--- \(fixed(rows[0].elapsedS, 1)) s"]
        out.append(pad("FUNCTION", 40) + lpad("CALLS", 12) + lpad("TOTAL", 12) + lpad("MEAN", 12) + lpad("MISSES", 9))
        let sorted = rows.sorted { $0.calls > $1.calls }
        for r in sorted {
            out.append(pad(r.function, 40) + lpad("\(r.calls)", 12) + lpad(r.timed ? CountTable.duration(r.ns) : "-", 12)
                       + lpad(r.timed ? CountTable.duration(r.meanNs) : "-", 12) + lpad("\(r.misses)", 9))
        }
        for r in sorted where r.calls > 0 {
            guard let hist = r.hist else { continue }
            out.append("")
            out.append("\(r.function) (\(r.histOf ?? "ns"))")
            out += CountTable.bars(Self.buckets(hist))
        }
        return out
    }

    /// The dense bucket array back from the event's [lo, hi, n] triples (bucket k starts at 2^(k-1)).
    static func buckets(_ sparse: [[UInt64]]) -> [UInt64] {
        var b = [UInt64](repeating: 0, count: 65)
        for t in sparse where t.count == 3 {
            let k = t[0] == 0 ? 0 : 64 - t[0].leadingZeroBitCount
            if k < b.count { b[k] = t[2] }
        }
        return b
    }

    /// `FUNCTION by KEY`, then one `KEY  CALLS` line per key, most calls first.
    private func keyTable(_ k: Event.Keys) -> [String] {
        var out = ["", pad("\(k.function) by \(k.by)", 40) + lpad("CALLS", 12)]
        for r in k.keys {
            let key = if case .string(let s) = r.key { s } else { r.key.text }
            out.append(pad("  " + key, 40) + lpad("\(r.count)", 12))
        }
        if k.others > 0 { out.append(pad("  (other keys)", 40) + lpad("\(k.others)", 12)) }
        if k.overflow > 0 { out.append(pad("  (table full: keys not kept)", 40) + lpad("\(k.overflow)", 12)) }
        return out
    }

    private func programTable(_ rows: [Event.Stats]) -> [String] {
        var out = [pad("FUNCTION", 36) + pad("KIND", 10) + pad("PROGRAM", 24) + lpad("CALLS", 12) + lpad("NS", 14) + lpad("MISSES", 8)]
        for r in rows {
            out.append(pad(r.function, 36) + pad(r.kind, 10) + pad(r.program.split(separator: "/").last.map(String.init) ?? "", 24)
                       + lpad("\(r.calls)", 12) + lpad("\(r.ns)", 14) + lpad("\(r.misses)", 8))
        }
        return out
    }

    private func tracedSummary(_ calls: UInt64, _ dropped: UInt64) -> String {
        "traced \(calls) call(s)" + (dropped == 0 ? ", none dropped" : "; \(dropped) dropped: the trace ring was full (hookit read too slowly)")
    }

}

extension EventRenderer {
    /// --stack: the call's frames, innermost first, one per line under the call's function.
    func stackLines(_ c: Event.Call) -> [String] {
        (c.stack ?? []).map { String(repeating: " ", count: 24) + $0 }
    }
}

extension Event {
    /// The process an event is about, when it names one.
    var pid: Int32? {
        switch self {
        case .attached(let e): e.pid
        case .refused: nil
        case .call(let e): e.pid
        case .stats(let e): e.pid
        case .keys(let e): e.pid
        case .override(let e): e.pid
        case .added(let e): e.pid
        case .removed(let e): e.pid
        case .list(let e): e.pid
        case .detached(let e): e.pid
        case .exited(let e): e.pid
        case .error(let e): e.pid
        case .pending(let e): e.pid
        case .loaded(let e): e.pid
        case .exec(let e): e.pid
        case .fork(let e): e.pid
        }
    }
}
