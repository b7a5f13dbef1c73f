import Glibc
import Injector
import RemoteTramp

/// Everything `hookit attach` prints: JSON lines with --json, a readable table otherwise.
struct Output {
    let json: Bool
    /// Trace lines show seconds since this moment (CLOCK_MONOTONIC ns).
    let start = Clock.now()

    func attached(functions: Int, links: Int, refused: [(function: String, reason: String)], stop: StopStats,
                  codeUsed: Int, codeMapped: Int) {
        refusals(refused)
        if json {
            line("{\"event\":\"attached\",\"functions\":\(functions),\"links\":\(links),\"refused\":\(refused.count),\"stopped_ns\":\(stop.totalNanos),\"longest_stop_ns\":\(stop.longestNanos),\"code_bytes_used\":\(codeUsed),\"code_bytes_mapped\":\(codeMapped)}")
        } else {
            line("attached \(links) program(s) to \(functions) function(s); world stopped \(ms(stop.totalNanos)) ms")
        }
    }

    /// Functions a pattern matched that cannot be hooked safely, one line each.
    private func refusals(_ refused: [(function: String, reason: String)]) {
        for r in refused {
            if json { line("{\"event\":\"refused\",\"function\":\(JSON.string(r.function)),\"reason\":\(JSON.string(r.reason))}") }
            else { line("refused \(r.function): \(r.reason)") }
        }
    }

    func stats(_ rows: [(Link, LinkStats?)]) {
        if !json {
            line(pad("FUNCTION", 36) + pad("KIND", 10) + pad("PROGRAM", 24) + lpad("CALLS", 12) + lpad("NS", 14) + lpad("MISSES", 8))
        }
        for (link, s) in rows {
            let fn = "\(link.function.module):\(link.function.name)"
            let calls = s?.calls ?? 0, ns = s?.nsecs ?? 0, misses = s?.misses ?? 0
            if json {
                line("{\"event\":\"stats\",\"function\":\(JSON.string(fn)),\"address\":\"0x\(String(link.function.address, radix: 16))\",\"id\":\(link.id),\"kind\":\"\(link.kind.rawValue)\",\"program\":\(JSON.string(link.code.name)),\"cookie\":\(link.cookie),\"calls\":\(calls),\"ns\":\(ns),\"misses\":\(misses)}")
            } else {
                line(pad(fn, 36) + pad(link.kind.rawValue, 10) + pad(link.code.name.split(separator: "/").last.map(String.init) ?? "", 24)
                     + lpad("\(calls)", 12) + lpad("\(ns)", 14) + lpad("\(misses)", 8))
            }
        }
    }

    func detached(restored: Int, kept: Int = 0, leftMapped: [String], stop: StopStats, traced: (calls: UInt64, dropped: UInt64)? = nil) {
        if json {
            let left = leftMapped.map { JSON.string($0) }.joined(separator: ",")
            let trace = traced.map { ",\"traced\":\($0.calls),\"dropped\":\($0.dropped)" } ?? ""
            line("{\"event\":\"detached\",\"restored\":\(restored),\"kept\":\(kept),\"left_mapped\":[\(left)],\"stops\":\(stop.count),\"longest_stop_ns\":\(stop.longestNanos)\(trace)}")
        } else {
            if let t = traced { line("traced \(t.calls) call(s); \(t.dropped) dropped (the ring was full)") }
            line("detached: \(restored) function(s) restored; world stopped \(stop.count) time(s), longest \(ms(stop.longestNanos)) ms")
            if kept > 0 { line("kept \(kept) replacement(s) live in the process (--keep)") }
            for l in leftMapped { line("left mapped (a thread may still return into it): \(l)") }
        }
    }

    // MARK: - trace, counts, overrides

    func call(_ c: TracedCall) {
        line(json ? c.json : c.text(since: start))
    }

    /// The --count table (at each --interval and at detach).
    func counts(_ rows: [CountTable.Row], histogram: Bool, elapsed: Double, final: Bool) {
        if json {
            for r in rows {
                var s = "{\"event\":\"stats\",\"function\":\(JSON.string(r.label)),\"address\":\"0x\(String(r.function.address, radix: 16))\",\"kind\":\"count\",\"program\":\"count\",\"cookie\":0,\"calls\":\(r.calls),\"ns\":\(r.nsecs),\"mean_ns\":\(r.meanNanos),\"misses\":\(r.misses),\"timed\":\(r.timed),\"final\":\(final),\"elapsed_s\":\(fixed(elapsed, 3))"
                if histogram && r.timed {
                    let buckets = r.histogram.enumerated().filter { $0.element > 0 }.map { k, n in
                        let (lo, hi) = CountTable.bounds(k)
                        return "[\(lo),\(hi),\(n)]"
                    }
                    s += ",\"hist\":[\(buckets.joined(separator: ","))]"
                }
                line(s + "}")
            }
        } else {
            line(final ? "" : "--- \(fixed(elapsed, 1)) s")
            for l in CountTable.text(rows, histogram: histogram) { line(l) }
        }
    }

    func override(_ o: OverrideEntry, calls: UInt64, injected: UInt64) {
        let fn = "\(o.function.module):\(o.function.name)"
        let value = Int64(bitPattern: o.settings.value)
        if json {
            line("{\"event\":\"override\",\"function\":\(JSON.string(fn)),\"value\":\(value),\"errno\":\(o.settings.errno),\"calls\":\(calls),\"injected\":\(injected)}")
        } else {
            let e = o.settings.errno == 0 ? "" : " (errno \(o.settings.errno))"
            line("override \(fn): \(injected) of \(calls) call(s) returned \(value)\(e)")
        }
    }

    // MARK: - interactive replies

    func prompt() {
        print("hookit> ", terminator: "")
        fflush(stdout)
    }

    func added(_ hook: Hook, refused: [(function: String, reason: String)], stop: StopStats) {
        let functions = Set(hook.links.map(\.function.address)).count
        refusals(refused)
        if json {
            line("{\"event\":\"added\",\"id\":\(hook.id),\"functions\":\(functions),\"links\":\(hook.links.count),\"refused\":\(refused.count),\"stopped_ns\":\(stop.lastNanos)}")
        } else {
            line("hook \(hook.id): \(hook.links.count) program(s) on \(functions) function(s) (\(hook.text))")
        }
    }

    func removed(_ hook: Hook, stats: LinkStats) {
        if json {
            line("{\"event\":\"removed\",\"id\":\(hook.id),\"calls\":\(stats.calls),\"ns\":\(stats.nsecs),\"misses\":\(stats.misses)}")
        } else {
            line("hook \(hook.id) removed: \(stats.calls) call(s), \(stats.misses) miss(es)")
        }
    }

    func list(_ hooks: [(Hook, LinkStats)]) {
        if json {
            let items = hooks.map { h, s in
                "{\"id\":\(h.id),\"hook\":\(JSON.string(h.text)),\"functions\":\(Set(h.links.map(\.function.address)).count),\"calls\":\(s.calls),\"ns\":\(s.nsecs),\"misses\":\(s.misses)}"
            }
            line("{\"event\":\"list\",\"hooks\":[\(items.joined(separator: ","))]}")
        } else {
            if hooks.isEmpty { line("no hooks") }
            for (h, s) in hooks { line("\(h.id)  \(h.text)  calls \(s.calls)  misses \(s.misses)") }
        }
    }

    func error(_ text: String) {
        if json { line("{\"event\":\"error\",\"message\":\(JSON.string(text))}") } else { line("error: \(text)") }
    }

    func help() {
        line("add --trace P | --count P | --override F=V [--errno E] | --replace F=/lib.so:SYM | --prog SPEC   hook live; prints the hook id")
        line("remove ID    unhook; prints its calls")
        line("list         hooks with their statistics")
        line("detach       restore everything and leave (end of input does the same)")
    }

    func problem(_ text: String) {
        var e = StandardError()
        print("hookit: warning: \(text)", to: &e)
    }

    private func line(_ s: String) {
        print(s)
        fflush(stdout)
    }

    private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    private func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? " " + s : String(repeating: " ", count: n - s.count) + s }
}
