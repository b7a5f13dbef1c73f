import CPtrace

/// The time stamp counter, the runtime's clock: hookit reads it once beside CLOCK_MONOTONIC to
/// turn the ticks of trace events into times.
public enum TimeStampCounter {
    public static func now() -> UInt64 { hk_rdtsc() }
}
