import ArgumentParser
import Glibc
import Injector
import RemoteTramp

struct AttachCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Hook functions of a running process with trampolines until told to stop.",
        discussion: """
        --trace prints every call; --count counts calls with their time (--hist: latency \
        histograms; --interval: a table every N seconds); --override skips a function and \
        returns a value (fault injection); --replace sends every call to another function; \
        --prog attaches a C program from a library: KIND:PATTERN=/abs/lib.so:SYMBOL[,cookie=N] \
        where KIND is fentry, fexit, fmod_ret or replace (see include/hookit.h), or from C \
        source compiled on the spot: KIND:PATTERN=./file.c:SYMBOL. PATTERN is \
        [MODULE:]GLOB (libc.so.6:str*, target:*). Runs until --duration seconds pass or \
        SIGINT/SIGTERM/SIGHUP, then restores every patched byte and detaches. Several PIDs, or \
        --name NAME, hook several processes at once: each event carries its pid, counts are \
        per process, and a process that cannot be hooked is reported without stopping the others.
        """
    )

    @Argument(help: "The processes to hook (one or more PIDs).")
    var pids: [Int32] = []

    @Option(help: ArgumentHelp("Also hook every process whose comm or executable's base name is NAME (not hookit itself, not zombies).", valueName: "name"))
    var name: String?

    @OptionGroup var hooks: HookSpecs
    @OptionGroup var flags: SessionFlags

    @Flag(help: "Read commands on stdin (add, remove, list, detach) and apply each live.")
    var interactive = false

    func validate() throws {
        if pids.isEmpty && name == nil { throw ValidationError("give the process to hook: PID [PID ...] or --name NAME") }
    }

    func run() throws {
        let (requests, given) = try flags.start(hooks, allowEmpty: interactive)
        var output = given
        let processes: ProcessSet
        do {
            let targets = try ProcessChoice(pids: pids, name: name).targets()
            output.several = targets.count > 1
            processes = try ProcessSet(pids: targets, requests: requests, options: try flags.sessionOptions(hooks), output: output)
        } catch {
            throw output.fatal(error)
        }
        if interactive {
            InteractiveSession(processes: processes, output: output).run()
        } else {
            processes.runUntilDone(duration: flags.duration)
        }
        if !processes.detach() { throw ExitCode.failure }
    }
}

/// Options of a session that are not hooks, shared by `attach` and `run`.
struct SessionFlags: ParsableArguments {
    @Option(help: ArgumentHelp("Seconds to stay attached (default: until interrupted).", valueName: "seconds"))
    var duration: Double?

    @Option(help: ArgumentHelp("With --count: print the table every SECONDS too, not only at detach.", valueName: "seconds"))
    var interval: Double?

    @Flag(help: "With --count: a log2 latency histogram per function.")
    var hist = false

    @Flag(help: "With --replace: leave the replacements in place after hookit exits (a live patch). Everything else is always removed.")
    var keep = false

    @Option(name: .customLong("output"), help: ArgumentHelp("Also write the traced calls to FILE.json as a Chrome trace (opens in Perfetto).", valueName: "file.json"))
    var chromeTrace: String?

    @Flag(help: "One JSON object per line (the events of docs/events.md).")
    var json = false

    @Flag(name: .customLong("no-follow"), help: "Stay with the one process: children it forks run its hooks unattended (their patches stay after hookit leaves).")
    var noFollow = false

    @Option(help: ArgumentHelp("With --count: also write the counts to FILE.prom in Prometheus' text format, at every --interval and at detach, replaced atomically (for node_exporter's textfile collector).", valueName: "file.prom"))
    var prometheus: String?

    @Option(help: ArgumentHelp("With --trace: also write the traced calls to FILE.jsonl as OpenTelemetry spans (OTLP/JSON, one ExportTraceServiceRequest per line).", valueName: "file.jsonl"))
    var otlp: String?

    @Option(help: ArgumentHelp("With --otlp: the service.name of the spans (default: the process's name).", valueName: "name"))
    var service: String?
    @Flag(help: "Show functions by their raw (mangled) names; C++ and Rust names are shown demangled otherwise. Patterns match both.")
    var mangled = false

    @OptionGroup var stackFlags: StackFlags

    @Flag(name: .customLong("no-time"), help: "--count counts calls only, without their time (the cheapest count).")
    var noTime = false

    @Flag(name: .customLong("prog-time"), help: "Keep the time spent in each --prog program (two TSC reads per run; the kernel's bpf_stats_enabled).")
    var progTime = false

    @Option(name: .customLong("memory-budget"), help: ArgumentHelp("Bytes of trampoline code hookit may map in the process.", valueName: "bytes"))
    var memoryBudget: Int = 64 << 20

    func validate() throws {
        if let i = interval, !(i > 0) { throw ValidationError("--interval must be a positive number of seconds") }
        if let d = duration, !(d > 0) { throw ValidationError("--duration must be a positive number of seconds") }
        if service != nil && otlp == nil { throw ValidationError("--service names the spans of --otlp: give --otlp FILE.jsonl") }
    }

    /// The hook requests, with bad input refused before anything touches the process.
    func requests(_ hooks: HookSpecs, allowEmpty: Bool) throws -> [HookRequest] {
        do {
            let r = try hooks.requests()
            _ = try hooks.signatures()
            if r.isEmpty && !allowEmpty {
                throw ValidationError("nothing to hook: give --trace, --count, --override, --replace or --prog")
            }
            // An interactive session may add its --count and --trace later.
            if prometheus != nil && hooks.counts.isEmpty && !allowEmpty {
                throw ValidationError("--prometheus writes the --count table: give --count PATTERN")
            }
            if otlp != nil && hooks.traces.isEmpty && !allowEmpty {
                throw ValidationError("--otlp writes the traced calls: give --trace PATTERN")
            }
            try stackFlags.check(hooks, allowEmpty: allowEmpty)
            if keep && hooks.replaces.isEmpty && hooks.rawReplaces.isEmpty && !hooks.progs.contains(where: { $0.hasPrefix("replace:") }) {
                throw ValidationError("--keep keeps replacements: give --replace")
            }
            return r
        } catch let e as ValidationError {
            throw e
        } catch {
            throw Output(json: json).fatal(error)
        }
    }

    /// What every hooking command does first: signals caught, priority raised, the hook
    /// requests checked (before anything touches a process), the output made.
    func start(_ hooks: HookSpecs, allowEmpty: Bool) throws -> ([HookRequest], Output) {
        catchTerminationSignals()
        raisePriority()
        return (try requests(hooks, allowEmpty: allowEmpty), Output(json: json))
    }

    func sessionOptions(_ hooks: HookSpecs) throws -> SessionOptions {
        var o = SessionOptions()
        o.timeCounts = !noTime
        o.table.timePrograms = progTime && !noTime
        o.table.memoryBudget = memoryBudget
        o.signatures = try hooks.signatures()
        o.interval = interval
        o.histogram = hist
        o.keepReplacements = keep
        o.followForks = !noFollow
        o.chromeTrace = chromeTrace
        o.prometheus = prometheus
        o.otlp = otlp
        o.service = service
        o.mangledNames = mangled
        stackFlags.apply(&o, hooks)
        return o
    }
}
