import ArgumentParser
import Glibc
import Injector

@main
struct Hookit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hookit",
        abstract: "Hook functions inside a running Linux x86-64 process.",
        subcommands: [SymbolsCommand.self, InjectCommand.self, AttachCommand.self, RunCommand.self]
    )

    /// The arguments as the hook options' order needs them (see HookOptionOrder).
    static func main() {
        HookOptionOrder.commandLine = HookOptionOrder.normalized(Array(CommandLine.arguments.dropFirst()))
        main(HookOptionOrder.commandLine)
    }
}

/// Prints a typed error the way every subcommand does; the command ends by throwing the exit
/// code returned, so the argument parser exits non-zero.
func reportFailure(_ error: Error) -> ExitCode {
    var stderr = StandardError()
    print("hookit: error: \(advice(for: error))", to: &stderr)
    return .failure
}

/// A shell's exit code for a waitpid status: the status of an exit, 128 + the signal of a kill.
func shellExitCode(waitStatus status: Int32) -> Int32 { WaitStatus.shellExitCode(status) }

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) { fputs(string, Glibc.stderr) }
}

/// SIGINT, SIGTERM and SIGHUP only set a flag (Interruption): Injector notices it at its next
/// safe point, unwinds and detaches, so the tracee is never left stopped or half-changed.
func catchTerminationSignals() { Interruption.catchTerminationSignals() }

/// hookit runs at the highest normal priority when it may (root): its work — reading symbols,
/// relocating entries, building images, answering ptrace stops — is what the tracee waits for,
/// and a process whose hundreds of threads all run would otherwise leave hookit one share in
/// hundreds of the CPUs (400 busy threads: attach + detach took 15 s, not 3). Not a real-time
/// class: a bug in hookit can never starve the machine. Without the right it stays as it is.
func raisePriority() {
    _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -20)
}
