import CPtrace
import Glibc
import Injector
import RemoteTramp

/// Everything `hookit attach` prints: JSON lines with --json, a readable table otherwise.
struct Output {
    let json: Bool
    /// Trace lines show seconds since this moment (CLOCK_MONOTONIC ns).
    let start = Clock.now()

    func attached(functions: Int, links: Int, report: AddReport, stop: StopStats, codeUsed: Int, codeMapped: Int) {
        refusals(report)
        if json {
            line("{\"event\":\"attached\",\"functions\":\(functions),\"links\":\(links),\"refused\":\(report.refused.count),\"patterns\":\(patterns(report)),\"stopped_ns\":\(stop.totalNanos),\"longest_stop_ns\":\(stop.longestNanos),\"code_bytes_used\":\(codeUsed),\"code_bytes_mapped\":\(codeMapped)}")
        } else {
            line("attached \(links) program(s) to \(functions) function(s); world stopped \(ms(stop.totalNanos)) ms")
        }
    }

    private func patterns(_ report: AddReport) -> String {
        "[" + report.patterns.map { "{\"request\":\(JSON.string($0.request)),\"hooked\":\($0.hooked),\"refused\":\($0.refused)}" }.joined(separator: ",") + "]"
    }

    /// Functions a pattern matched that cannot be hooked safely: one JSON event each, or for
    /// people a summary per pattern, grouped by reason.
    private func refusals(_ report: AddReport) {
        if json {
            for r in report.refused {
                line("{\"event\":\"refused\",\"function\":\(JSON.string(r.function)),\"pattern\":\(JSON.string(r.pattern)),\"reason\":\(JSON.string(r.reason))}")
            }
            return
        }
        for p in report.patterns {
            line("\(p.request): \(p.hooked) function(s) hooked" + (p.refused > 0 ? ", \(p.refused) refused:" : ""))
            let mine = report.refused.filter { $0.request == p.request }
            var reasons: [String: [String]] = [:]
            var order: [String] = []
            for r in mine {
                if reasons[r.reason] == nil { order.append(r.reason) }
                reasons[r.reason, default: []].append(r.function.split(separator: ":").last.map(String.init) ?? r.function)
            }
            for reason in order {
                let names = reasons[reason]!
                let shown = names.prefix(8).joined(separator: ", ") + (names.count > 8 ? ", ... (\(names.count - 8) more)" : "")
                line("  \(names.count) × \(reason): \(shown)")
            }
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

    func detached(restored: Int, kept: Int = 0, leftMapped: [String], stop: StopStats, traced: (calls: UInt64, dropped: UInt64)? = nil,
                  neverMatched: [String] = []) {
        if json {
            let left = leftMapped.map { JSON.string($0) }.joined(separator: ",")
            let trace = traced.map { ",\"traced\":\($0.calls),\"dropped\":\($0.dropped)" } ?? ""
            line("{\"event\":\"detached\",\"restored\":\(restored),\"kept\":\(kept),\"left_mapped\":[\(left)],\"stops\":\(stop.count),\"longest_stop_ns\":\(stop.longestNanos)\(trace)\(pendingField(neverMatched))}")
        } else {
            if let t = traced { line(tracedSummary(t)) }
            for p in neverMatched { line("never matched (its module was never loaded): \(p)") }
            line("detached: \(restored) function(s) restored; world stopped \(stop.count) time(s), longest \(ms(stop.longestNanos)) ms")
            if kept > 0 { line("kept \(kept) replacement(s) live in the process (--keep)") }
            for l in leftMapped { line("left mapped (a thread may still return into it): \(l)") }
        }
    }

    /// The process ended while hooked (`hookit run`: it ran to its end).
    func exited(status: Int32?, traced: (calls: UInt64, dropped: UInt64)?, neverMatched: [String] = []) {
        let code = status.map { shellExitCode(waitStatus: $0) }
        if json {
            let trace = traced.map { ",\"traced\":\($0.calls),\"dropped\":\($0.dropped)" } ?? ""
            line("{\"event\":\"exited\",\"status\":\(code.map { "\($0)" } ?? "null")\(trace)\(pendingField(neverMatched))}")
        } else {
            if let t = traced { line(tracedSummary(t)) }
            for p in neverMatched { line("never matched (its module was never loaded): \(p)") }
            line("the process exited" + (code.map { " with status \($0)" } ?? ""))
        }
    }

    /// Requests still waiting for their module at the end, as a JSON field.
    private func pendingField(_ neverMatched: [String]) -> String {
        ",\"pending\":[" + neverMatched.map { JSON.string($0) }.joined(separator: ",") + "]"
    }

    /// A request whose module is not loaded yet: accepted, applied when the module is mapped.
    func pending(request: String, module: String) {
        if json {
            line("{\"event\":\"pending\",\"request\":\(JSON.string(request)),\"module\":\(JSON.string(module))}")
        } else {
            line("\(request): pending until a module matching '\(module)' is loaded")
        }
    }

    /// A library the process loaded later, and what the requests hooked in it (before any of its
    /// code ran).
    func loaded(module: String, path: String, report: AddReport) {
        refusals(report)
        if json {
            let hooked = report.patterns.reduce(0) { $0 + $1.hooked }
            line("{\"event\":\"loaded\",\"module\":\(JSON.string(module)),\"path\":\(JSON.string(path)),\"functions\":\(hooked),\"refused\":\(report.refused.count),\"patterns\":\(patterns(report))}")
        } else {
            line("loaded \(path): hooked as it was mapped")
        }
    }

    private func tracedSummary(_ t: (calls: UInt64, dropped: UInt64)) -> String {
        "traced \(t.calls) call(s)" + (t.dropped == 0 ? ", none dropped" : "; \(t.dropped) dropped: the trace ring was full (hookit read too slowly)")
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
        StdoutSink.shared.append("hookit> ", newline: false)
    }

    func added(_ hook: Hook, report: AddReport, stop: StopStats) {
        let functions = Set(hook.links.map(\.function.address)).count
        refusals(report)
        if json {
            line("{\"event\":\"added\",\"id\":\(hook.id),\"functions\":\(functions),\"links\":\(hook.links.count),\"refused\":\(report.refused.count),\"patterns\":\(patterns(report)),\"stopped_ns\":\(stop.lastNanos)}")
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
        StdoutSink.shared.append(s)
    }

    /// More output is waiting than stdout takes: stop reading the trace ring for now (the
    /// tracee's writers then count drops; nothing waits on hookit's reader).
    var backlogged: Bool { StdoutSink.shared.backlogged }

    /// Everything still buffered, written out, for as long as stdout keeps taking it; a reader
    /// that took nothing for `stallSeconds` has stopped reading, and must not keep hookit from
    /// detaching and exiting: the rest is dropped (stderr says how much), and later output is not
    /// waited for again.
    func finish(stallSeconds: Double = 1) {
        let dropped = StdoutSink.shared.finish(stallSeconds: stallSeconds)
        if dropped > 0 { problem("stdout took nothing for \(stallSeconds) s; \(dropped) bytes of output were dropped") }
    }

    private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    private func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? " " + s : String(repeating: " ", count: n - s.count) + s }
}

/// stdout that never blocks the session: hookit must keep servicing the tracee (a thread the
/// tracee creates waits in a ptrace stop until hookit handles it), even when whoever reads
/// hookit's output (a pager, a pipe) pauses. Lines are buffered and written only as far as
/// stdout takes them without blocking: poll reports a pipe writable when PIPE_BUF bytes fit,
/// so each write is at most that. Only the final flush waits.
final class StdoutSink {
    nonisolated(unsafe) static let shared = StdoutSink()
    private var buffer: [UInt8] = []
    private var start = 0
    private var gone = false
    /// A last flush ran out of time once: later ones do not wait.
    private var stalled = false
    /// Above this, the trace ring is left unread (its writers count the drops).
    static let limit = 8 << 20

    var backlogged: Bool { buffer.count - start > Self.limit }

    func append(_ s: String, newline: Bool = true) {
        if gone { return }
        buffer.append(contentsOf: s.utf8)
        if newline { buffer.append(10) }
        flush(blocking: false)
    }

    /// A last flush: waits for stdout while it takes something at least every `stallSeconds`,
    /// then drops what is left. Returns the bytes dropped.
    func finish(stallSeconds: Double) -> Int {
        flush(stallSeconds: stalled ? 0 : stallSeconds)
        let left = gone ? 0 : buffer.count - start
        if left > 0 { stalled = true }
        buffer.removeAll()
        start = 0
        return left
    }

    func flush(blocking: Bool) { flush(stallSeconds: blocking ? .infinity : 0) }

    private func flush(stallSeconds: Double) {
        var idleUntil = Clock.seconds() + stallSeconds
        while start < buffer.count {
            var pfd = pollfd(fd: 1, events: Int16(POLLOUT), revents: 0)
            let wait = stallSeconds == 0 ? 0 : Int32(max(0, min(100, (idleUntil - Clock.seconds()) * 1000)))
            let ready = poll(&pfd, 1, wait)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { if ready == 0 && stallSeconds > 0 && Clock.seconds() < idleUntil { continue } else { break } }
            if pfd.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { stdoutGone(); return }
            let n = buffer.withUnsafeBytes { Glibc.write(1, $0.baseAddress! + start, min(Int(PIPE_BUF), buffer.count - start)) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                stdoutGone()
                return
            }
            start += n
            idleUntil = Clock.seconds() + stallSeconds
        }
        if start == buffer.count { buffer.removeAll(keepingCapacity: buffer.count < 1 << 20); start = 0 }
        else if start > 1 << 20 { buffer.removeSubrange(0..<start); start = 0 }
    }

    /// stdout is gone (`hookit ... | head`): nothing more to print, and the session ends as if
    /// interrupted — it detaches cleanly (SIGPIPE itself is ignored).
    /// Once only: the detach that follows must not be interrupted by its own output failing.
    private func stdoutGone() {
        buffer.removeAll()
        start = 0
        if !gone && hk_interrupt_signal == 0 { hk_interrupt_signal = SIGPIPE }
        gone = true
    }
}
