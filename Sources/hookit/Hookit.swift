import ArgumentParser
import CPtrace
import Glibc
import Injector

@main
struct Hookit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hookit",
        abstract: "Hook functions inside a running Linux x86-64 process.",
        subcommands: [SymbolsCommand.self, InjectCommand.self, AttachCommand.self, RunCommand.self]
    )
}

/// Prints a typed error the way every subcommand does and exits non-zero.
func fail(_ error: Error) -> Never {
    var stderr = StandardError()
    print("hookit: error: \(error)", to: &stderr)
    exit(1)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) { fputs(string, Glibc.stderr) }
}

/// SIGINT, SIGTERM and SIGHUP only set a flag: Injector notices it at its next safe point,
/// unwinds and detaches, so the tracee is never left stopped or half-changed.
func catchTerminationSignals() {
    let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP, 0]
    signals.withUnsafeBufferPointer { hk_catch_signals($0.baseAddress) }
}
