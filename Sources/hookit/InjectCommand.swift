import ArgumentParser
import Glibc
import Injector

struct InjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inject",
        abstract: "Load a shared library into a running process (its own dlopen).",
        discussion: "On failure prints the process's own dlerror() text. The process keeps running throughout, apart from a brief stop."
    )

    @Argument(help: "The process to load the library into.")
    var pid: Int32

    @Argument(help: "Absolute path of the library, as the process sees it.")
    var library: String

    @Option(help: "Seconds to wait for dlopen to return.")
    var timeout: Double = 10

    func run() throws {
        catchTerminationSignals()
        let tracee: Tracee
        let symbols: SymbolTable
        do {
            // Symbols first: reading them needs no stop, so the world stays stopped only briefly.
            try Preflight.check(pid: pid, forAttach: true)
            symbols = try SymbolTable(pid: pid)
            tracee = try Tracee.attach(pid: pid)
        } catch {
            throw reportFailure(error)
        }
        var result: Result<InjectedLibrary, Error>
        do {
            result = .success(try tracee.inject(library: library, symbols: symbols, timeout: timeout))
        } catch {
            result = .failure(error)
        }
        let report = tracee.detach()
        var stderr = StandardError()
        for p in report.problems { print("hookit: warning: \(p)", to: &stderr) }
        switch result {
        case .success(let lib):
            print("loaded \(lib.path) at 0x\(String(lib.base, radix: 16)) (bias 0x\(String(lib.bias, radix: 16)), handle 0x\(String(lib.handle, radix: 16)))")
            let s = report.stopStats
            print("world stopped \(s.count) times, longest \(ms(s.longestNanos)) ms, total \(ms(s.totalNanos)) ms; \(report.detachedThreads) thread(s) detached")
        case .failure(let error):
            throw reportFailure(error)
        }
    }
}

func ms(_ ns: UInt64) -> String {
    let v = Double(ns) / 1e6
    let scaled = (v * 1000).rounded() / 1000
    return "\(scaled)"
}
