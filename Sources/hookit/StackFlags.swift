import ArgumentParser

/// --stack, --by stack, --folded, --flamegraph: call stacks of traced and counted calls.
struct StackFlags: ParsableArguments {
    @Flag(help: "With --trace: each call carries its call stack, innermost first (module:function+0xOFF).")
    var stack = false

    @Option(help: ArgumentHelp("With --by stack: write the folded stacks to FILE at detach, one `outer;...;inner COUNT` line per stack (flamegraph.pl, inferno, speedscope).", valueName: "file"))
    var folded: String?

    @Option(help: ArgumentHelp("With --by stack: draw the folded stacks as a flame graph into FILE.svg at detach.", valueName: "file.svg"))
    var flamegraph: String?

    /// `--by stack` after a --count (HookSpecs owns --by: a key per --count, see HookModifiers).
    func byStack(_ hooks: HookSpecs) -> Bool { hooks.keys.contains("stack") }

    /// Bad combinations, refused before anything touches the process (an unknown --by key is
    /// refused with the other hook options, by HookOptionOrder).
    func check(_ hooks: HookSpecs, allowEmpty: Bool) throws {
        let byStack = byStack(hooks)
        if stack && hooks.traces.isEmpty && !allowEmpty {
            throw ValidationError("--stack gives each traced call its stack: give --trace PATTERN")
        }
        if byStack && hooks.counts.isEmpty && !allowEmpty {
            throw ValidationError("--by stack folds counted calls by their stack: give --count PATTERN")
        }
        if byStack && folded == nil && flamegraph == nil {
            throw ValidationError("--by stack writes folded stacks: give --folded FILE or --flamegraph FILE.svg")
        }
        if (folded != nil || flamegraph != nil) && !byStack {
            throw ValidationError("--folded and --flamegraph write the stacks of --count PATTERN --by stack: give --by stack")
        }
    }

    func apply(_ o: inout SessionOptions, _ hooks: HookSpecs) {
        o.stacks = stack
        o.countByStack = byStack(hooks)
        o.folded = folded
        o.flamegraph = flamegraph
    }
}
