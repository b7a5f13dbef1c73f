import CPtrace
import Glibc

/// SIGCHLD as a descriptor, so that waiting for the next ptrace stop sleeps instead of spinning.
///
/// Why: a tracer that spins on waitpid(WNOHANG) while a lent thread runs a remote call (every
/// syscall of a dlopen is a stop hookit answers) takes a whole CPU from the tracee, and on a
/// small machine the tracee's other threads then wait for a CPU: a pause hookit causes without
/// stopping anyone. The kernel sends the tracer SIGCHLD at every ptrace stop; with SIGCHLD blocked
/// and read through a signalfd, hookit sleeps in ppoll until one arrives.
///
/// Opt-in per process (`Tracee.sleepWhileWaiting()`, before any thread is created): SIGCHLD is
/// then blocked in every thread, which programs hookit starts must not inherit (hk_fork_exec
/// clears the mask before execve). A process that did not opt in (the tests, which start many
/// programs themselves) keeps the short spin-and-nap wait.
enum ChildSignal {
    nonisolated(unsafe) static var fd: Int32 = -1

    static func open() {
        guard fd < 0 else { return }
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGCHLD)
        guard pthread_sigmask(SIG_BLOCK, &set, nil) == 0 else { return }
        fd = signalfd(-1, &set, Int32(SFD_NONBLOCK | SFD_CLOEXEC))
    }

    /// Sleeps until a SIGCHLD arrives or `nanoseconds` pass (at most 1 ms: a SIGCHLD taken by
    /// another thread must not cost more than that), then drains the queued ones. poll's
    /// timeout is in milliseconds, so a shorter one only polls.
    static func sleep(upTo nanoseconds: UInt64, alsoWakingOn other: Int32 = -1) {
        var pfds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: other, events: Int16(POLLIN), revents: 0)]
        _ = poll(&pfds, other >= 0 ? 2 : 1, nanoseconds >= 500_000 ? 1 : 0)
        var info = signalfd_siginfo()
        while read(fd, &info, MemoryLayout<signalfd_siginfo>.size) > 0 {}
    }

    /// Whether `other` has input waiting (no wait).
    static func readable(_ other: Int32) -> Bool {
        var pfd = pollfd(fd: other, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 0) > 0 && pfd.revents & Int16(POLLIN) != 0
    }
}

extension Tracee {
    /// Makes every wait for a ptrace event of this process sleep until the event (see
    /// ChildSignal). Call once, early, before threads are started.
    public static func sleepWhileWaiting() { ChildSignal.open() }
}
