import Glibc

/// What hookit knows about one seized thread of the tracee.
public final class TraceeThread {
    public let tid: pid_t

    /// True while the thread sits in a ptrace-stop that hookit has not released.
    public internal(set) var stopped = false

    /// The thread reported a signal-delivery-stop for this signal while hookit held it.
    /// The signal is handed back when the thread is released from that same stop: the
    /// kernel honours an injected signal only at a signal-delivery-stop, so it must not
    /// be released from any other stop in between (it would be swallowed).
    public internal(set) var pendingSignal: Int32 = 0

    /// The thread is in a group-stop (SIGSTOP/SIGTSTP/... from job control). It is
    /// released with PTRACE_LISTEN, so it stays stopped until SIGCONT, as without hookit.
    public internal(set) var groupStopped = false

    /// A stop was requested with PTRACE_INTERRUPT and has not been reported yet.
    var interruptPending = false

    /// The thread is lent to a remote syscall or call; its stops belong to that operation.
    var borrowed = false

    /// The last stop was a syscall-entry or -exit stop (only seen while borrowed).
    var inSyscallStop = false

    init(tid: pid_t) { self.tid = tid }
}
