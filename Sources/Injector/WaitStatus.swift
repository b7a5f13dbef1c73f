import CPtrace

/// A process's end, as waitpid reports it.
public enum WaitStatus {
    /// A shell's exit code for it: the status of an exit, 128 + the signal of a kill.
    public static func shellExitCode(_ status: Int32) -> Int32 {
        hk_wifexited(status) != 0 ? hk_wexitstatus(status) : 128 + hk_wtermsig(status)
    }
}
