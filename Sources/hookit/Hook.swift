import Injector
import RemoteTramp

/// One hook request group as the user added it: a hook id for the session, with the links it
/// made (one or two per matching function) and what its features report.
struct Hook {
    let id: Int
    let text: String
    var links: [Link]
    /// What was asked: applied again to every library loaded later that a pattern matches.
    var requests: [HookRequest] = []
    var counts: [CountEntry] = []
    var overrides: [OverrideEntry] = []
    /// Link ids of the user's own programs (--prog, --replace): reported per link.
    var programLinks: Set<Int> = []
}

/// A counted function: the runtime's timed count (calls, ns, histogram), or the built-in
/// counter's link when time is off or the runtime cannot run in the process.
struct CountEntry {
    let function: FunctionSymbol
    let timed: TimedCount?
    let link: Link
    /// --by: calls per key; --top: rows shown.
    var keyed: KeyedCount? = nil
    var top: Int? = nil
    /// --hist argN.
    var values: ValueHistogram? = nil

    var keyText: String {
        switch keyed?.key {
        case .argument(let n)?: "arg\(n)"
        case .returnValue?: "ret"
        case .threadID?: "tid"
        case .caller?: "caller"
        case nil: ""
        }
    }
}

struct OverrideEntry {
    let function: FunctionSymbol
    let program: Override
    var settings: Override.Settings { program.settings }
}

/// What an add hooked and refused, per pattern: functions a pattern matched that cannot be
/// hooked safely (too short, a branch back into the bytes to patch, patched by something else,
/// ...) are left alone and reported; the others are hooked.
struct AddReport {
    struct Refusal { let function: String, pattern: String, request: String, reason: String }
    struct Pattern { let request: String, hooked: Int, refused: Int }
    var refused: [Refusal] = []
    var patterns: [Pattern] = []
}

/// Options of a session that are not hooks.
struct SessionOptions {
    var table = TrampolineTable.Options()
    /// --count takes time (the runtime's timing programs), unless --no-time.
    var timeCounts = true
    var signatures: [Signature] = []
    var interval: Double?
    var histogram = false
    var keepReplacements = false
    /// Children the process forks are followed (not with --no-follow).
    var followForks = true
    var chromeTrace: String?
    /// --prometheus FILE.prom, --otlp FILE.jsonl, --service NAME (Exports.swift).
    var prometheus: String?
    var otlp: String?
    var service: String?
    /// --mangled: functions are reported by their raw names, not demangled.
    var mangledNames = false
    /// --stack: each traced call carries its call stack; --by stack: counted calls are folded by
    /// stack into --folded FILE and --flamegraph FILE.svg.
    var stacks = false
    var countByStack = false
    var folded: String?
    var flamegraph: String?
}
