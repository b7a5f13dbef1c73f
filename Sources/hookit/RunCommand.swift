import ArgumentParser
import Glibc
import Injector
import RemoteTramp

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Start a program with hooks live from its first call to main.",
        discussion: """
        hookit run [hook options] -- CMD ARGS...: CMD starts under hookit, which stops it at \
        the first instruction of main (libraries loaded, constructors run), installs the hooks, \
        then lets it run. When CMD exits, the counts and traces are printed and hookit exits \
        with CMD's status; on SIGINT/SIGTERM or --duration, hookit detaches and CMD runs on.
        """
    )

    @OptionGroup var hooks: HookSpecs
    @OptionGroup var flags: SessionFlags

    @Argument(parsing: .postTerminator, help: "The program and its arguments, after --.")
    var command: [String] = []

    func validate() throws {
        if command.isEmpty { throw ValidationError("give the program to run after --, e.g. hookit run --trace 'libc.so.6:open*' -- ls /") }
    }

    func run() throws {
        let (requests, output) = try flags.start(hooks, allowEmpty: false)
        let session: HookSession
        let tracee: Tracee
        do {
            tracee = try Tracee.spawn(command, followForks: !flags.noFollow)
        } catch {
            throw output.fatal(error)
        }
        do {
            session = try HookSession(pid: tracee.pid, requests: requests, options: try flags.sessionOptions(hooks),
                                      output: output, spawned: tracee)
        } catch {
            // The program never got to main with its hooks: it does not run without them.
            tracee.killAndReap()
            throw output.fatal(error)
        }
        session.runUntilDone(duration: flags.duration)
        let exited = tracee.exited
        let ok = session.detach(exitExpected: true)
        if exited, let status = tracee.exitStatus {
            throw ExitCode(shellExitCode(waitStatus: status))
        }
        if !ok { throw ExitCode.failure }
    }
}
