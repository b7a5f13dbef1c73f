import CPtrace
import Glibc

/// A request to stop from outside — SIGINT, SIGTERM or SIGHUP, or hookit's own output gone
/// (a closed pipe) — as one flag every long wait looks at: Injector notices it at its next safe
/// point, unwinds and detaches, so the tracee is never left stopped or half-changed. The signal
/// handler only sets it (async-signal-safe: a sig_atomic_t in CPtrace).
public enum Interruption {
    /// Installs the handlers for SIGINT, SIGTERM and SIGHUP and ignores SIGPIPE (a closed
    /// stdout shows up as EPIPE). Call once, early, before threads are started: it also makes
    /// ptrace waits sleep until SIGCHLD (see ChildSignal).
    public static func catchTerminationSignals() {
        Tracee.sleepWhileWaiting()
        let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP, 0]
        signals.withUnsafeBufferPointer { hk_catch_signals($0.baseAddress) }
        Glibc.signal(SIGPIPE, SIG_IGN)
    }

    /// The signal that asked, or nil.
    public static var signal: Int32? { hk_interrupt_signal == 0 ? nil : Int32(hk_interrupt_signal) }

    public static var requested: Bool { hk_interrupt_signal != 0 }

    /// Asks as `signal` would (hookit's stdout closed: SIGPIPE), unless something asked already.
    public static func request(_ signal: Int32) { if hk_interrupt_signal == 0 { hk_interrupt_signal = signal } }

    /// Forgets the request: a detach it asked for must not be cut short by it.
    public static func clear() { hk_interrupt_signal = 0 }

    /// Throws `InjectorError.interrupted` when a request is pending.
    static func check() throws {
        if let s = signal { throw InjectorError.interrupted(signal: s) }
    }
}
