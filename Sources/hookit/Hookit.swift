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

/// A shell's exit code for a waitpid status: the status of an exit, 128 + the signal of a kill.
func shellExitCode(waitStatus status: Int32) -> Int32 {
    hk_wifexited(status) != 0 ? hk_wexitstatus(status) : 128 + hk_wtermsig(status)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) { fputs(string, Glibc.stderr) }
}

/// SIGINT, SIGTERM and SIGHUP only set a flag: Injector notices it at its next safe point,
/// unwinds and detaches, so the tracee is never left stopped or half-changed.
/// SIGPIPE is ignored: a closed stdout shows up as EPIPE, and the session detaches.
func catchTerminationSignals() {
    Tracee.sleepWhileWaiting()
    let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP, 0]
    signals.withUnsafeBufferPointer { hk_catch_signals($0.baseAddress) }
    signal(SIGPIPE, SIG_IGN)
}

/// hookit runs at the highest normal priority when it may (root): its work — reading symbols,
/// relocating entries, building images, answering ptrace stops — is what the tracee waits for,
/// and a process whose hundreds of threads all run would otherwise leave hookit one share in
/// hundreds of the CPUs (400 busy threads: attach + detach took 15 s, not 3). Not a real-time
/// class: a bug in hookit can never starve the machine. Without the right it stays as it is.
func raisePriority() {
    _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -20)
}
