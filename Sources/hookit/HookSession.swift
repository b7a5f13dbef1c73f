import CPtrace
import Glibc
import Injector
import RemoteTramp

/// The attach → hook → wait → detach life cycle of `hookit attach`. All hooking logic lives in
/// RemoteTramp; this only drives it and reports.
final class HookSession {
    let tracee: Tracee
    let table: TrampolineTable
    let output: Output
    var refused: [(function: String, reason: String)] = []

    init(pid: pid_t, requests: [HookRequest], options: TrampolineTable.Options, output: Output) throws {
        self.output = output
        try Preflight.check(pid: pid, forAttach: true)
        // Symbols first: reading them needs no stop.
        let symbols = try SymbolTable(pid: pid)
        var plan: [(HookRequest, [FunctionSymbol])] = []
        for r in requests { plan.append((r, try symbols.resolve([r.pattern]))) }

        tracee = try Tracee.attach(pid: pid)
        var options = options
        options.runtimeLibrary = Self.runtimeLibraryPath()
        table = TrampolineTable(tracee: tracee, symbols: symbols, options: options)
        do {
            // Entries are read and relocated while the process runs; the stop that links and
            // patches them is then short.
            try tracee.resumeWorld()
            _ = table.prepare(plan.flatMap { $0.1 })
            try tracee.stopWorld()
            for (request, functions) in plan {
                var linked = 0
                for f in functions {
                    do {
                        try table.link(request.kind, request.program, to: f, cookie: request.cookie)
                        linked += 1
                    } catch let e as TrampolineError {
                        // One function that cannot be hooked safely does not sink a whole pattern,
                        // but a pattern that hooks nothing is an error.
                        guard functions.count > 1, case .cannotPatch = e else { throw e }
                        refused.append(("\(f.module):\(f.name)", "\(e)"))
                    }
                }
                if linked == 0 { throw TrampolineError.cannotPatch(function: request.pattern.text, reason: "every matching function was refused") }
            }
            try table.update()
            try tracee.resumeWorld()
        } catch {
            // Cleaning up is not to be cut short by the signal that may have caused the failure.
            hk_interrupt_signal = 0
            _ = table.detach(waitSeconds: 1)
            tracee.detach()
            throw error
        }
        output.attached(functions: table.hookedFunctions.count, links: table.links.count, refused: refused,
                        stop: tracee.stopStats, codeUsed: table.codeBytesUsed, codeMapped: table.codeBytesMapped)
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
