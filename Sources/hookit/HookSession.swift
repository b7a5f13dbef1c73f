import CPtrace
import Glibc
import Injector
import RemoteTramp

/// One `--count` / `--prog` group as the user added it: a hook id for the session, with the
/// links it made (one per matching function).
struct Hook {
    let id: Int
    let text: String
    var links: [Link]
}

/// The attach → hook → wait → detach life cycle of `hookit attach`, and the live add/remove of
/// hooks of an interactive session. All hooking logic lives in RemoteTramp; this only drives it
/// and reports.
final class HookSession {
    let tracee: Tracee
    let table: TrampolineTable
    let output: Output
    private(set) var symbols: SymbolTable
    private(set) var hooks: [Hook] = []
    private var nextHookID = 1

    /// Attaches, creates the trampoline table and adds `requests` (if any) as the first hook.
    /// Returns with the tracee running.
    init(pid: pid_t, requests: [HookRequest], options: TrampolineTable.Options, output: Output) throws {
        self.output = output
        try Preflight.check(pid: pid, forAttach: true)
        // Symbols first: reading them needs no stop.
        symbols = try SymbolTable(pid: pid)
        for r in requests { _ = try symbols.resolve([r.pattern]) }   // bad patterns fail before attaching
        tracee = try Tracee.attach(pid: pid)
        var options = options
        options.runtimeLibrary = Self.runtimeLibraryPath()
        table = TrampolineTable(tracee: tracee, symbols: symbols, options: options)
        do {
            try tracee.resumeWorld()
            var refused: [(function: String, reason: String)] = []
            if !requests.isEmpty {
                refused = try add(requests, text: requests.map(\.text).joined(separator: " ")).refused
            }
            output.attached(functions: table.hookedFunctions.count, links: table.links.count, refused: refused,
                            stop: tracee.stopStats, codeUsed: table.codeBytesUsed, codeMapped: table.codeBytesMapped)
        } catch {
            // Cleaning up is not to be cut short by the signal that may have caused the failure.
            hk_interrupt_signal = 0
            _ = table.detach(waitSeconds: 1)
            tracee.detach()
            throw error
        }
    }

    /// Links every function the requests match, live: entries are read and relocated while the
    /// process runs, then one stop links and patches them all. A function that cannot be hooked
    /// safely does not sink a pattern (it is reported), but a pattern that hooks nothing is an
    /// error, and then nothing of this add stays. Called and returns with the tracee running.
    func add(_ requests: [HookRequest], text: String) throws -> (hook: Hook, refused: [(function: String, reason: String)]) {
        // Aliases (memcpy and __memcpy, ...) are one function: hooked once, under its first name.
        let plan = try requests.map { r -> (HookRequest, [FunctionSymbol]) in
            var seen = Set<UInt64>()
            return (r, try resolve(r.pattern).filter { seen.insert($0.address).inserted })
        }
        _ = table.prepare(plan.flatMap { $0.1 })
        try tracee.stopWorld()
        var links: [Link] = []
        var refused: [(function: String, reason: String)] = []
        do {
            for (request, functions) in plan {
                var linked = 0
                for f in functions {
                    do {
                        links.append(try table.link(request.kind, request.program, to: f, cookie: request.cookie))
                        linked += 1
                    } catch let e as TrampolineError {
                        guard functions.count > 1, case .cannotPatch = e else { throw e }
                        refused.append(("\(f.module):\(f.name)", "\(e)"))
                    }
                }
                if linked == 0 { throw TrampolineError.cannotPatch(function: request.pattern.text, reason: "every matching function was refused") }
            }
            try table.update()
        } catch {
            for l in links { try? table.unlink(l.id) }
            try? table.update()
            try? tracee.resumeWorld()
            throw error
        }
        try tracee.resumeWorld()
        let hook = Hook(id: nextHookID, text: text, links: links)
        nextHookID += 1
        hooks.append(hook)
        return (hook, refused)
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
        return (hook, stats)
    }

    /// Statistics of a hook: the sum over its links (read from the tracee's memory).
    func total(_ hook: Hook) -> LinkStats {
        var sum = LinkStats(calls: 0, nsecs: 0, misses: 0)
        for l in hook.links {
            if let s = try? table.stats(l) { sum.calls += s.calls; sum.nsecs += s.nsecs; sum.misses += s.misses }
        }
        return sum
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

    /// Services the tracee's events (signals, new threads) until the duration passes or a
    /// termination signal arrives.
    func runUntilDone(duration: Double?) {
        let start = Clock.seconds()
        while hk_interrupt_signal == 0 {
            if let d = duration, Clock.seconds() - start >= d { break }
            do {
                try tracee.pump(seconds: 0.05)
            } catch {
                output.problem("\(error)")
                break
            }
            if tracee.exited { break }
        }
    }

    /// Restores the tracee and reports statistics. Returns false when something was left behind.
    func detach() -> Bool {
        // A termination signal asked for this detach; it must not also cut the detach short.
        // (Another one arriving from here on still interrupts it.)
        hk_interrupt_signal = 0
        if tracee.exited {
            output.problem("the process exited")
            return false
        }
        do { try tracee.stopWorld() } catch { output.problem("\(error)") }
        let links = table.links.values.sorted { $0.id < $1.id }
        var stats: [(Link, LinkStats?)] = []
        for link in links { stats.append((link, try? table.stats(link))) }
        let report = table.detach()
        let injector = tracee.detach()
        output.stats(stats)
        for p in report.problems + injector.problems { output.problem(p) }
        output.detached(restored: report.restored, leftMapped: report.leftMapped, stop: injector.stopStats)
        return report.problems.isEmpty && injector.problems.isEmpty
    }
}
