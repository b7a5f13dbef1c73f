import Glibc

/// Following a process through execve (issue 17, part 3): the exec stop is held
/// (`execPending`), then the new image is run to its `main`, as `spawn` runs a program it
/// started, so that its libraries are loaded and it can be hooked before its own code runs.
///
/// Between the exec and main, hookit's int3 is on the new image's main (or its entry point and
/// then __libc_start_main, for a program without symbols): a hookit that died in that window
/// would leave the process to a stray SIGTRAP. The window is the loader's start-up, a few ms;
/// after it, the process is as safe as any attached one (design.md invariant 4).
extension Tracee {
    /// The program the process now runs (/proc/PID/exe).
    public var programPath: String { executablePath() }

    /// Runs the image an exec started to its main and returns with the world held there
    /// (every thread in a ptrace stop, as after `stopWorld`). An image that execs again before
    /// its main is followed into the next one. On failure the process is let go from where it
    /// is (it runs on unhooked) and the error is thrown.
    public func runExecedImageToMain() throws {
        precondition(execPending, "no exec stop is held")
        execPending = false
        adopt(pid).stopped = true
        // Whatever fails, the process goes on from where it is (its int3, if one was placed,
        // is taken out by runToBreakpoint only on success: a failure there is an interruption
        // or an exit).
        var succeeded = false
        defer { if !succeeded { for t in threads.values where t.stopped && !held { try? release(t) } } }
        for _ in 0..<16 {
            do {
                try runToMain(command: executablePath())
                execed = false
                succeeded = true
                return
            } catch InjectorError.execedBeforeMain {
                // The exec stop of the next image, taken inside the breakpoint wait.
                for other in threads.keys where other != pid { threads[other] = nil }
                stubLease = nil
                memory.reopen()
                adopt(pid).stopped = true
            }
        }
        throw InjectorError.execedBeforeMain(command: executablePath(), path: executablePath())
    }

    /// Lets an exec stop go without following the new image (it runs on unhooked).
    public func releaseExec() {
        guard execPending else { return }
        execPending = false
        if let t = threads[pid] { try? release(t) }
    }
}
