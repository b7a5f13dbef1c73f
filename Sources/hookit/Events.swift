/// Everything a session reports, as data: `--json` writes each event as one line
/// (EventEncoder), the text renderer (EventRenderer) turns the same values into the terminal's
/// lines. The schema is docs/events.md; a field added here goes there too (HookitCLITests checks
/// every line of a session against that document). Property names are the JSON names in
/// camelCase: the encoder writes them in snake_case.
enum Event {
    /// Bumped when a field changes meaning or goes away; adding a field or an event does not.
    static let schema = 1

    case attached(Attached)
    case refused(Refused)
    case call(Call)
    case stats(Stats)
    case override(Override)
    case added(Added)
    case removed(Removed)
    case list(HookList)
    case detached(Detached)
    case exited(Exited)
    case error(Failure)
    case pending(Pending)
    case loaded(Loaded)
    case exec(Exec)
    case fork(Fork)
    case keys(Keys)

    struct PatternReport: Codable { var request: String, hooked: Int, refused: Int }

    struct Attached: Codable {
        var schema = Event.schema
        var pid: Int32
        var process: String
        var functions: Int
        var links: Int
        var refused: Int
        var patterns: [PatternReport]
        var stoppedNs: UInt64
        var longestStopNs: UInt64
        var codeBytesUsed: Int
        var codeBytesMapped: Int
    }

    struct Refused: Codable { var function: String, pattern: String, request: String, reason: String }

    struct Call: Codable {
        var function: String
        var tid: UInt32
        /// The process of the thread (the traced process or a child it forked); nil if unknown.
        var pid: Int32?
        var ts: UInt64
        var args: [TracedValue]
        /// null when the call did not return (see `ended`) or returns void.
        var ret: TracedValue
        /// From the entry to where the call ended; nil (JSON null) when that is not known.
        var ns: UInt64?
        /// How it ended: EndedCall.Ending's names (returned, unwound, thread_exit, exit, exec,
        /// detached, unknown).
        var ended: String
        /// With --stack: the call stack, innermost first (absent without --stack).
        var stack: [String]? = nil

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(function, forKey: .function)
            try c.encode(tid, forKey: .tid)
            try c.encodeIfPresent(pid, forKey: .pid)
            try c.encode(ts, forKey: .ts)
            try c.encode(args, forKey: .args)
            try c.encode(ret, forKey: .ret)
            try c.encode(ns, forKey: .ns)   // null, not absent: every call line has the same keys
            try c.encode(ended, forKey: .ended)
            try c.encodeIfPresent(stack, forKey: .stack)
        }
    }

    /// One shape for counted functions (kind "count") and for programs' runs (their kind).
    struct Stats: Codable {
        var function: String
        /// The process attached (its followed children count with it).
        var pid: Int32?
        var address: String
        /// The program's link id; nil for a counted function (its hook's id is in `added`).
        var id: Int?
        var kind: String
        var program: String
        var cookie: UInt64
        var calls: UInt64
        var ns: UInt64
        var meanNs: UInt64
        var misses: UInt64
        var timed: Bool
        var final: Bool
        var elapsedS: Double
        /// [lo, hi, calls] per non-empty log2 bucket (ns), with --hist on a timed count only.
        var hist: [[UInt64]]?
        /// What `hist` counts: "ns" (latency, --hist) or "argN" (the argument's value, --hist argN).
        var histOf: String? = nil
    }

    /// --count --by KEY: calls per key of one function.
    struct Keys: Codable {
        struct Row: Codable { var key: TracedValue, count: UInt64 }
        var function: String
        var pid: Int32?
        var by: String
        var keys: [Row]
        var others: UInt64
        var overflow: UInt64
        var final: Bool
        var elapsedS: Double
    }

    struct Override: Codable { var function: String, pid: Int32?, value: Int64, errno: Int32, calls: UInt64, injected: UInt64 }

    struct Added: Codable {
        var id: Int
        var pid: Int32?
        var hook: String
        var functions: Int
        var links: Int
        var refused: Int
        var patterns: [PatternReport]
        var stoppedNs: UInt64
    }

    struct Removed: Codable { var id: Int, pid: Int32?, calls: UInt64, ns: UInt64, misses: UInt64 }

    struct HookList: Codable {
        struct Item: Codable { var id: Int, hook: String, functions: Int, calls: UInt64, ns: UInt64, misses: UInt64 }
        var pid: Int32?
        var hooks: [Item]
    }

    struct Detached: Codable {
        var pid: Int32?
        var restored: Int
        var kept: Int
        var leftMapped: [String]
        var stops: Int
        var longestStopNs: UInt64
        var traced: UInt64?
        var dropped: UInt64?
        /// Requests that waited for a module the process never loaded.
        var pending: [String]
    }

    struct Exited: Codable {
        /// The shell's exit code (128 + signal for a kill); null when the status was not seen.
        var pid: Int32?
        var status: Int32?
        var traced: UInt64?
        var dropped: UInt64?
        var pending: [String]

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encodeIfPresent(pid, forKey: .pid)
            try c.encode(status, forKey: .status)
            try c.encodeIfPresent(traced, forKey: .traced)
            try c.encodeIfPresent(dropped, forKey: .dropped)
            try c.encode(pending, forKey: .pending)
        }
    }

    /// `fatal`: hookit stops because of it (exit status 1); otherwise the session goes on (a bad
    /// interactive command).
    /// `pid`: the process it concerns, when hookit works on several (`attach PID PID ...`).
    struct Failure: Codable { var message: String, fatal: Bool, pid: Int32? = nil }

    struct Pending: Codable { var request: String, module: String, pid: Int32? }
    struct Loaded: Codable {
        var pid: Int32?
        var module: String
        var path: String
        var functions: Int
        var refused: Int
        var patterns: [PatternReport]
    }
    struct Exec: Codable {
        var pid: Int32
        var path: String
        var functions: Int
        var refused: Int
        var patterns: [PatternReport]
    }
    struct Fork: Codable { var pid: Int32, child: Int32, functions: Int }

    var name: String {
        switch self {
        case .attached: "attached"
        case .refused: "refused"
        case .call: "call"
        case .stats: "stats"
        case .override: "override"
        case .added: "added"
        case .removed: "removed"
        case .list: "list"
        case .detached: "detached"
        case .exited: "exited"
        case .error: "error"
        case .pending: "pending"
        case .loaded: "loaded"
        case .exec: "exec"
        case .fork: "fork"
        case .keys: "keys"
        }
    }

    var payload: any Encodable {
        switch self {
        case .attached(let p): p
        case .refused(let p): p
        case .call(let p): p
        case .stats(let p): p
        case .override(let p): p
        case .added(let p): p
        case .removed(let p): p
        case .list(let p): p
        case .detached(let p): p
        case .exited(let p): p
        case .error(let p): p
        case .pending(let p): p
        case .loaded(let p): p
        case .exec(let p): p
        case .fork(let p): p
        case .keys(let p): p
        }
    }
}
