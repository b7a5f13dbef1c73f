import ArgumentParser
import Glibc
import Injector
import RemoteTramp

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Start a program with hooks live from its first instruction.",
        discussion: """
        hookit run [hook options] -- CMD ARGS...: CMD starts under hookit with hookit's runtime \
        and the hook program libraries preloaded; hookit holds it once the dynamic loader has \
        loaded and relocated its libraries, before any constructor runs, installs the hooks, \
        then lets it run: constructors, .init_array and libc's start-up calls are hooked too. \
        A static program is held at its entry point and gets the built-in count. When CMD \
        exits, the counts and traces are printed and hookit exits with CMD's status; on \
        SIGINT/SIGTERM or --duration, hookit detaches and CMD runs on.
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
            tracee = try Tracee.spawn(command, followForks: !flags.noFollow, holdAt: .beforeInitializers(preload: Self.preloads(requests)))
        } catch {
            throw output.fatal(error)
        }
        do {
            session = try HookSession(pid: tracee.pid, requests: requests, options: try flags.sessionOptions(hooks),
                                      output: output, spawned: tracee)
        } catch {
            // The program never got its hooks: it does not run without them.
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

    /// What the loader loads before the program's own code: hookit's runtime (when built) and
    /// every program library the hooks name, each once.
    static func preloads(_ requests: [HookRequest]) -> [PreloadLibrary] {
        let runtime = HookSession.runtimeLibraryPath()
        var out = access(runtime, R_OK) == 0 ? [TrampolineTable.runtimePreload(runtime)] : []
        for r in requests {
            if case .program(_, .user(let library, _), _, _) = r.feature, !out.contains(where: { $0.path == library }) {
                out.append(PreloadLibrary(path: library))
            }
        }
        return out
    }
}
