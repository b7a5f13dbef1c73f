import RemoteTramp

extension HookSession {
    /// Every --override's calls and injected faults (RemoteTramp's Override reads them): for the
    /// report at detach and for hookit_overrides_total at each interval.
    func overrideCounts() -> [(entry: OverrideEntry, label: String, calls: UInt64, injected: UInt64)] {
        hooks.flatMap(\.overrides).map { o in
            let r = o.program.read(table)
            return (o, o.function.label, r.calls, r.injected)
        }
    }
}
