import ArgumentParser
import Glibc
import Injector
import RemoteTramp

/// Everything `hookit attach` / `run` reports goes through here as typed events (Events.swift):
/// one JSON line each with --json, the EventRenderer's text otherwise. Errors also go to
/// stderr as text, so a script reading the JSON and a person watching stderr both see them.
struct Output {
    let json: Bool
    /// Several processes are hooked (`attach PID PID ...`, `--name`): text lines say which
    /// (JSON events always carry their `pid`).
    var several = false
    /// Trace lines show seconds since this moment (CLOCK_MONOTONIC ns).
    let start = Clock.now()
    private let encoder = EventEncoder()   // a class: one per session, shared by copies

    init(json: Bool) { self.json = json }

    /// One report: a batch the renderer may group (refusals under their pattern, a table).
    func emit(_ batch: [Event]) {
        if json {
            for e in batch { line(encoder.line(e)) }
        } else {
            for l in EventRenderer(start: start, several: several).lines(batch) { line(l) }
        }
    }

    func emit(_ event: Event) { emit([event]) }

    func attached(pid: pid_t, functions: Int, links: Int, report: AddReport, stop: StopStats, codeUsed: Int, codeMapped: Int) {
        emit(refusals(report) + [.attached(.init(
            pid: pid, process: processName(pid), functions: functions, links: links, refused: report.refused.count,
            patterns: patterns(report), stoppedNs: stop.totalNanos, longestStopNs: stop.longestNanos,
            codeBytesUsed: codeUsed, codeBytesMapped: codeMapped))])
    }

    private func patterns(_ report: AddReport) -> [Event.PatternReport] {
        report.patterns.map { .init(request: $0.request, hooked: $0.hooked, refused: $0.refused) }
    }

    /// Functions a pattern matched that cannot be hooked safely.
    private func refusals(_ report: AddReport) -> [Event] {
        report.refused.map { .refused(.init(function: $0.function, pattern: $0.pattern, request: $0.request, reason: $0.reason)) }
    }

    /// The user's programs' runs, at detach. `timed`: time was kept (not --no-time).
    func stats(_ rows: [(Link, LinkStats?)], timed: Bool = true, pid: pid_t? = nil) {
        let elapsed = (Double(Clock.now() - start) / 1e6).rounded() / 1000
        emit(rows.map { link, s in
            let calls = s?.calls ?? 0, ns = s?.nsecs ?? 0
            return .stats(.init(function: link.function.label, pid: pid, address: hex(link.function.address),
                                id: link.id, kind: link.kind.rawValue, program: link.code.name, cookie: link.cookie,
                                calls: calls, ns: ns, meanNs: calls == 0 ? 0 : ns / calls, misses: s?.misses ?? 0,
                                // The built-in counter (--prog KIND:P=count) counts runs only.
                                timed: timed && link.code.name != "count", final: true, elapsedS: elapsed, hist: nil))
        })
    }

    /// `neverMatched`: requests still waiting for their module.
    func detached(pid: pid_t? = nil, restored: Int, kept: Int = 0, leftMapped: [String], stop: StopStats,
                  traced: (calls: UInt64, dropped: UInt64)? = nil, neverMatched: [String] = []) {
        emit(.detached(.init(pid: pid, restored: restored, kept: kept, leftMapped: leftMapped, stops: stop.count,
                             longestStopNs: stop.longestNanos, traced: traced?.calls, dropped: traced?.dropped, pending: neverMatched)))
    }

    /// The process ended while hooked (`hookit run`: it ran to its end).
    func exited(pid: pid_t? = nil, status: Int32?, traced: (calls: UInt64, dropped: UInt64)?, neverMatched: [String] = []) {
        emit(.exited(.init(pid: pid, status: status.map { shellExitCode(waitStatus: $0) }, traced: traced?.calls, dropped: traced?.dropped,
                           pending: neverMatched)))
    }

    /// The process (or a child of it) forked `child`, which hookit now follows.
    func fork(pid: pid_t, child: pid_t, functions: Int) {
        emit(.fork(.init(pid: pid, child: child, functions: functions)))
    }

    /// The process ran exec and its new image got the session's hooks.
    func exec(pid: pid_t, path: String, functions: Int, report: AddReport) {
        emit(refusals(report) + [.exec(.init(pid: pid, path: path, functions: functions, refused: report.refused.count,
                                             patterns: patterns(report)))])
    }

    /// A request whose module is not loaded yet: accepted, applied when the module is mapped.
    func pending(request: String, module: String, pid: pid_t? = nil) {
        emit(.pending(.init(request: request, module: module, pid: pid)))
    }

    /// A library the process loaded later, and what the requests hooked in it before any of its
    /// code ran.
    func loaded(module: String, path: String, report: AddReport, pid: pid_t? = nil) {
        emit(refusals(report) + [.loaded(.init(pid: pid, module: module, path: path, functions: report.patterns.reduce(0) { $0 + $1.hooked },
                                               refused: report.refused.count, patterns: patterns(report)))])
    }

    // MARK: - trace, counts, overrides

    func call(_ c: TracedCall, pid: pid_t? = nil) {
        emit(.call(.init(function: c.function, tid: c.tid, pid: pid, ts: c.timestamp, args: c.args, ret: c.ret, ns: c.nanos,
                         ended: c.ended.rawValue, stack: c.stack)))
    }

    /// The --count table (at each --interval and at detach).
    func counts(_ rows: [CountTable.Row], histogram: Bool, elapsed: Double, final: Bool, pid: pid_t? = nil) {
        func sparse(_ buckets: [UInt64]) -> [[UInt64]] {
            buckets.enumerated().filter { $0.element > 0 }.map { k, n in let (lo, hi) = CountTable.bounds(k); return [lo, hi, n] }
        }
        emit(rows.map { r in
            // --hist argN shows that argument's values instead of the latency.
            let hist = r.valueHistogram.map(sparse) ?? (histogram && r.timed ? sparse(r.histogram) : nil)
            let of = r.valueArgument.map { "arg\($0)" } ?? (hist == nil ? nil : "ns")
            return .stats(.init(function: r.label, pid: pid, address: hex(r.function.address), id: nil, kind: "count", program: "count",
                                cookie: 0, calls: r.calls, ns: r.nsecs, meanNs: r.meanNanos, misses: r.misses, timed: r.timed,
                                final: final, elapsedS: (elapsed * 1000).rounded() / 1000, hist: hist, histOf: of))
        })
    }

    /// The --by tables (after the count table they belong to).
    func keys(_ tables: [KeyTable], elapsed: Double, final: Bool, pid: pid_t? = nil) {
        if tables.isEmpty { return }
        emit(tables.map { t in
            .keys(.init(function: t.function.label, pid: pid, by: t.by, keys: t.rows.map { .init(key: $0.key, count: $0.count) },
                        others: t.others, overflow: t.overflow, final: final, elapsedS: (elapsed * 1000).rounded() / 1000))
        })
    }

    func override(_ o: OverrideEntry, calls: UInt64, injected: UInt64, pid: pid_t? = nil) {
        emit(.override(.init(function: o.function.label, pid: pid, value: Int64(bitPattern: o.settings.value),
                             errno: o.settings.errno, calls: calls, injected: injected)))
    }

    // MARK: - interactive replies

    func prompt() {
        StdoutSink.shared.append("hookit> ", newline: false)
    }

    func added(_ hook: Hook, report: AddReport, stop: StopStats, pid: pid_t? = nil) {
        emit(refusals(report) + [.added(.init(
            id: hook.id, pid: pid, hook: hook.text, functions: Set(hook.links.map(\.function.address)).count, links: hook.links.count,
            refused: report.refused.count, patterns: patterns(report), stoppedNs: stop.lastNanos))])
    }

    func removed(_ hook: Hook, stats: LinkStats, pid: pid_t? = nil) {
        emit(.removed(.init(id: hook.id, pid: pid, calls: stats.calls, ns: stats.nsecs, misses: stats.misses)))
    }

    func list(_ hooks: [(Hook, LinkStats)], pid: pid_t? = nil) {
        emit(.list(.init(pid: pid, hooks: hooks.map { h, s in
            .init(id: h.id, hook: h.text, functions: Set(h.links.map(\.function.address)).count, calls: s.calls, ns: s.nsecs, misses: s.misses)
        })))
    }

    /// An error the session survives (a bad interactive command, a process of several that
    /// cannot be hooked): a JSON event with --json, and always text on stderr.
    func error(_ text: String, pid: pid_t? = nil) {
        reportError(text, fatal: false, pid: pid)
    }

    /// An error hookit exits on: reported as `error` (with --json) and on stderr; the command
    /// throws the exit code returned.
    func fatal(_ error: Error) -> ExitCode {
        fflush(stdout)   // what print() buffered (hookit symbols) comes first
        reportError(advice(for: error), fatal: true)
        finish()
        return .failure
    }

    private func reportError(_ text: String, fatal: Bool, pid: pid_t? = nil) {
        if json { line(encoder.line(.error(.init(message: text, fatal: fatal, pid: pid)))) }
        var e = StandardError()
        print("hookit: error: \(text)", to: &e)
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

    /// Writes what stdout takes now without waiting. Called at every round of the session, so
    /// buffered lines go out while nothing new is printed (else the last lines would wait for a
    /// next one, and a full buffer would keep the ring unread for good).
    func pump() { StdoutSink.shared.flush(blocking: false) }

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

    private func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
}

/// The process's name as the kernel has it (comm), for reports and for the exports' labels.
func processName(_ pid: pid_t) -> String {
    (try? ProcFS.read("/proc/\(pid)/comm"))?.trimmingCharacters(in: "\n") ?? "process \(pid)"
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
        if !gone { Interruption.request(SIGPIPE) }
        gone = true
    }
}
