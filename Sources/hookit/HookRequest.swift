import ArgumentParser
import Injector
import RemoteTramp

/// What hookit does at each function a pattern matches.
enum Feature: Equatable {
    /// A program as the user gave it: --prog KIND:PATTERN=/abs/lib.so:SYMBOL, or =count.
    /// `raw`: a replacement reached by a bare jump (--replace-raw).
    case program(ProgramKind, ProgramSpec, cookie: UInt64, raw: Bool = false)
    /// --count: calls, time and a latency histogram (runtime programs), or only calls (the
    /// built-in counter) when time is off or the runtime cannot be loaded (a static process).
    case count
    /// --trace: every call into the trace ring; the --sig signatures given with it.
    case trace([Signature])
    /// --override FUNC=VALUE: skip the function and return VALUE (fmod_ret).
    case override(Override.Settings)
}

/// One hook request from the command line (or an interactive `add`).
struct HookRequest {
    var feature: Feature
    var pattern: SymbolPattern
    /// As the user wrote it, for `list` and reports.
    var text: String
    /// --if, --by, --top, --hist argN given after it.
    var modifiers = HookModifiers()

    /// The request with the modifiers that followed it on the command line.
    func modified(_ m: HookModifiers?) -> HookRequest {
        guard let m, !m.isEmpty else { return self }
        var r = self
        r.modifiers = m
        r.text += m.text
        return r
    }

    init(count pattern: String) throws {
        text = "--count \(pattern)"
        feature = .count
        self.pattern = try SymbolPattern(pattern)
    }

    init(trace pattern: String, signatures: [Signature] = []) throws {
        text = "--trace \(pattern)"
        feature = .trace(signatures)
        self.pattern = try SymbolPattern(pattern)
    }

    /// FUNC=VALUE, VALUE a decimal (may be negative) or 0x number.
    init(override spec: String, errno: String?, every: UInt64?, probability: Double?) throws {
        text = "--override \(spec)"
        guard let eq = spec.lastIndex(of: "="), let value = Self.number(String(spec[spec.index(after: eq)...])) else {
            throw ValidationError("--override '\(spec)': expected FUNC=VALUE (VALUE: an integer such as -1, 0 or 0x10)")
        }
        pattern = try SymbolPattern(String(spec[..<eq]))
        var s = Override.Settings(value: value)
        if let e = errno {
            guard let n = Errno.number(e) else { throw ValidationError("--errno '\(e)': not an errno name (ENOENT, EIO, ...) or number") }
            s.errno = n
        }
        if let n = every {
            guard n >= 1 else { throw ValidationError("--every must be at least 1") }
            s.every = n
        }
        if let p = probability {
            guard p > 0 && p <= 1 else { throw ValidationError("--probability must be in (0, 1]") }
            s.threshold = UInt64(p * 4294967296.0)
        }
        feature = .override(s)
    }

    /// FUNC=/abs/lib.so:SYMBOL, or FUNC=./file.c:SYMBOL (built here, see InlineProgram)
    init(replace spec: String, raw: Bool = false) throws {
        let option = raw ? "--replace-raw" : "--replace"
        text = "\(option) \(spec)"
        guard let eq = spec.firstIndex(of: "=") else {
            throw ValidationError("\(option) '\(spec)': expected FUNC=/abs/lib.so:SYMBOL")
        }
        pattern = try SymbolPattern(String(spec[..<eq]))
        let rest = String(spec[spec.index(after: eq)...])
        guard let sep = rest.lastIndex(of: ":"), rest.hasPrefix("/") || InlineProgram.isSource(String(rest[..<sep])) else {
            throw ValidationError("\(option) '\(spec)': the replacement must be /abs/lib.so:SYMBOL or FILE.c:SYMBOL")
        }
        let symbol = String(rest[rest.index(after: sep)...])
        let library = try InlineProgram.library(String(rest[..<sep]), symbol: symbol)
        feature = .program(.replace, .user(library: library, symbol: symbol), cookie: 0, raw: raw)
    }

    /// KIND:PATTERN=/abs/lib.so:SYMBOL[,cookie=N], or =./file.c:SYMBOL (built here, see InlineProgram)
    init(prog text: String) throws {
        self.text = "--prog \(text)"
        guard let colon = text.firstIndex(of: ":"), let eq = text.firstIndex(of: "="), colon < eq,
              let kind = ProgramKind(rawValue: String(text[..<colon])) else {
            throw ValidationError("--prog '\(text)': expected KIND:PATTERN=/abs/lib.so:SYMBOL[,cookie=N] with KIND fentry, fexit, fmod_ret or replace")
        }
        pattern = try SymbolPattern(String(text[text.index(after: colon)..<eq]))
        var rest = String(text[text.index(after: eq)...])
        var cookie: UInt64 = 0
        if let comma = rest.firstIndex(of: ",") {
            let option = rest[rest.index(after: comma)...]
            rest = String(rest[..<comma])
            guard option.hasPrefix("cookie="), let c = UInt64(option.dropFirst(7)) ?? UInt64(option.dropFirst(9), radix: 16) else {
                throw ValidationError("--prog '\(text)': unknown option '\(option)' (only cookie=N)")
            }
            cookie = c
        }
        if rest == "count" {
            feature = .program(kind, .count, cookie: cookie)      // the built-in counter, in any kind's list
            return
        }
        guard let sep = rest.lastIndex(of: ":"), rest.hasPrefix("/") || InlineProgram.isSource(String(rest[..<sep])) else {
            throw ValidationError("--prog '\(text)': the program must be /abs/lib.so:SYMBOL, FILE.c:SYMBOL or count")
        }
        let symbol = String(rest[rest.index(after: sep)...])
        let library = try InlineProgram.library(String(rest[..<sep]), symbol: symbol)
        feature = .program(kind, .user(library: library, symbol: symbol), cookie: cookie)
    }

    static func number(_ s: String) -> UInt64? {
        let t = s.trimmingCharacters(in: " ")
        if t.hasPrefix("0x") { return UInt64(t.dropFirst(2), radix: 16) }
        if t.hasPrefix("-0x") { return UInt64(t.dropFirst(3), radix: 16).map { 0 &- $0 } }
        if let v = Int64(t) { return UInt64(bitPattern: v) }
        return UInt64(t)
    }
}

/// The options that make hooks, shared by `attach`, `run` and the interactive `add`.
struct HookSpecs: ParsableArguments {
    @Option(name: .customLong("count"), help: ArgumentHelp("Count calls of the functions matching PATTERN, with their time (--hist: a latency histogram; after it, --by KEY: calls per key, --hist argN: a histogram of argument N's values).", valueName: "pattern"))
    var counts: [String] = []

    @Option(name: .customLong("trace"), help: ArgumentHelp("Print every call of the functions matching PATTERN: time, thread, arguments, return value, duration.", valueName: "pattern"))
    var traces: [String] = []

    @Option(name: .customLong("sig"), help: ArgumentHelp("A traced function's C signature, e.g. 'open(str, int, oct) -> int' (types: int uint long ulong size_t hex ptr str char bool oct void).", valueName: "signature"))
    var sigs: [String] = []

    @Option(name: .customLong("override"), help: ArgumentHelp("FUNC=VALUE: skip FUNC and return VALUE instead (fault injection).", valueName: "func=value"))
    var overrides: [String] = []

    @Option(name: .customLong("errno"), help: ArgumentHelp("With --override: the errno the caller then sees (ENOENT, EIO, 5, ...).", valueName: "errno"))
    var errnoValue: String?

    @Option(help: ArgumentHelp("With --override: only every Nth call.", valueName: "n"))
    var every: UInt64?

    @Option(help: ArgumentHelp("With --override: each call with probability P (0 < P <= 1).", valueName: "p"))
    var probability: Double?

    @Option(name: .customLong("replace"), help: ArgumentHelp("FUNC=/abs/lib.so:SYMBOL: every call of FUNC goes to SYMBOL (a hot patch).", valueName: "func=/abs/lib.so:symbol"))
    var replaces: [String] = []

    @Option(name: .customLong("replace-raw"), help: ArgumentHelp(
        "FUNC=/abs/lib.so:SYMBOL: as --replace, but calls jump straight to SYMBOL even when it may change registers FUNC leaves alone. Faster, and UNSAFE for callers compiled with gcc -O2 (-fipa-ra) that keep values in those registers across the call: they can compute wrong results or crash. --replace wraps SYMBOL only when that is needed.",
        valueName: "func=/abs/lib.so:symbol"))
    var rawReplaces: [String] = []

    @Option(name: .customLong("prog"), help: ArgumentHelp("KIND:PATTERN=/abs/lib.so:SYMBOL[,cookie=N], KIND:PATTERN=FILE.c:SYMBOL (C source, compiled here with cc against hookit.h), or KIND:PATTERN=count (KIND: fentry, fexit, fmod_ret, replace).", valueName: "spec"))
    var progs: [String] = []

    @Option(name: .customLong("if"), help: ArgumentHelp("With the --trace, --count or --override before it: only calls for which EXPR holds, e.g. 'arg0 >= 1M && str(arg1) ~ \"/etc/*\"' (arg0..arg5, ret, tid, ns; == != < <= > >=; && || ! ( ); suffixes k M us ms s). Evaluated inside the process.", valueName: "expr"))
    var filters: [String] = []

    @Option(name: .customLong("by"), help: ArgumentHelp("With the --count before it: calls per key (arg0..arg5, ret, tid, caller), counted inside the process; `stack` folds the calls by call stack (with --folded or --flamegraph).", valueName: "key"))
    var keys: [String] = []

    @Option(name: .customLong("top"), help: ArgumentHelp("With --by: show the N keys with the most calls.", valueName: "n"))
    var tops: [Int] = []

    @Option(name: .customLong("hist-arg"), help: ArgumentHelp("Written `--hist argN` after a --count: a log2 histogram of argument N's value instead of the latency.", valueName: "argN", visibility: .hidden))
    var valueHistograms: [String] = []

    func validate() throws {
        if (errnoValue != nil || every != nil || probability != nil) && overrides.isEmpty {
            throw ValidationError("--errno, --every and --probability go with --override")
        }
        if every != nil && probability != nil { throw ValidationError("give --every or --probability, not both") }
    }

    var isEmpty: Bool { counts.isEmpty && traces.isEmpty && overrides.isEmpty && replaces.isEmpty && rawReplaces.isEmpty && progs.isEmpty }

    /// `arguments`: the words these options were parsed from, which say which hook option each
    /// --if, --by, --top and --hist argN follows (HookOptionOrder).
    func requests(arguments: [String] = HookOptionOrder.commandLine) throws -> [HookRequest] {
        let m = try HookOptionOrder.modifiers(arguments)
        func after(_ option: String, _ i: Int) -> HookModifiers? { m[option].flatMap { i < $0.count ? $0[i] : nil } }
        return try counts.enumerated().map { try HookRequest(count: $1).modified(after("--count", $0)) }
            + traces.enumerated().map { try HookRequest(trace: $1, signatures: try signatures()).modified(after("--trace", $0)) }
            + overrides.enumerated().map {
                try HookRequest(override: $1, errno: errnoValue, every: every, probability: probability).modified(after("--override", $0))
            }
            + replaces.map { try HookRequest(replace: $0) }
            + rawReplaces.map { try HookRequest(replace: $0, raw: true) }
            + progs.map { try HookRequest(prog: $0) }
    }

    func signatures() throws -> [Signature] { try sigs.map { try Signature(parsing: $0) } }
}

/// errno names as the C library spells them.
enum Errno {
    static let names: [String: Int32] = [
        "EPERM": 1, "ENOENT": 2, "ESRCH": 3, "EINTR": 4, "EIO": 5, "ENXIO": 6, "E2BIG": 7, "ENOEXEC": 8,
        "EBADF": 9, "ECHILD": 10, "EAGAIN": 11, "EWOULDBLOCK": 11, "ENOMEM": 12, "EACCES": 13, "EFAULT": 14,
        "EBUSY": 16, "EEXIST": 17, "EXDEV": 18, "ENODEV": 19, "ENOTDIR": 20, "EISDIR": 21, "EINVAL": 22,
        "ENFILE": 23, "EMFILE": 24, "ENOTTY": 25, "EFBIG": 27, "ENOSPC": 28, "ESPIPE": 29, "EROFS": 30,
        "EMLINK": 31, "EPIPE": 32, "EDOM": 33, "ERANGE": 34, "EDEADLK": 35, "ENAMETOOLONG": 36, "ENOLCK": 37,
        "ENOSYS": 38, "ENOTEMPTY": 39, "ELOOP": 40, "ENODATA": 61, "ETIME": 62, "EOVERFLOW": 75,
        "ENOTSOCK": 88, "EMSGSIZE": 90, "EPROTONOSUPPORT": 93, "EOPNOTSUPP": 95, "EADDRINUSE": 98,
        "EADDRNOTAVAIL": 99, "ENETDOWN": 100, "ENETUNREACH": 101, "ECONNABORTED": 103, "ECONNRESET": 104,
        "ENOBUFS": 105, "EISCONN": 106, "ENOTCONN": 107, "ETIMEDOUT": 110, "ECONNREFUSED": 111,
        "EHOSTUNREACH": 113, "EALREADY": 114, "EINPROGRESS": 115, "EDQUOT": 122, "ECANCELED": 125,
    ]

    static func number(_ s: String) -> Int32? {
        if let n = Int32(s), n > 0, n < 4096 { return n }
        return names[s.uppercased()]
    }
}
