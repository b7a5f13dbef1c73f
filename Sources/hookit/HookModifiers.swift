import ArgumentParser
import RemoteTramp

/// What `--if`, `--by`, `--top` and `--hist argN` add to the hook option before them.
struct HookModifiers: Equatable {
    /// --if EXPR: only the calls it passes are traced, counted or overridden.
    var filter: FilterExpression?
    var filterText: String?
    /// --by KEY (with --count): calls per key.
    var key: KeyedCount.Key?
    var keyText: String?
    /// --by stack: counted calls folded by call stack (UserStacks, --folded, --flamegraph).
    var byStack = false
    /// --top N (with --by): the N keys with the most calls are shown.
    var top: Int?
    /// --hist argN (with --count): a log2 histogram of the argument's value.
    var valueHistogram: Int?

    var isEmpty: Bool { self == HookModifiers() }

    /// As the user wrote them, after the hook option's own text.
    var text: String {
        var t = ""
        if let f = filterText { t += " --if '\(f)'" }
        if let k = keyText { t += " --by \(k)" }
        if let n = top { t += " --top \(n)" }
        if let a = valueHistogram { t += " --hist arg\(a)" }
        return t
    }

    static func key(_ text: String) throws -> KeyedCount.Key {
        switch text {
        case "ret": return .returnValue
        case "tid": return .threadID
        case "caller": return .caller
        default:
            if let n = argument(text) { return .argument(n) }
            throw ValidationError("--by '\(text)': unknown key (give arg0..arg5, ret, tid, caller or stack)")
        }
    }

    /// argN, N in 0...5.
    static func argument(_ text: String) -> Int? {
        guard text.hasPrefix("arg"), text.count == 4, let n = Int(text.dropFirst(3)), (0..<6).contains(n) else { return nil }
        return n
    }
}

/// The argument parser keeps each option's values in order but not the order between options,
/// and `--if` must know which hook option it follows: this reads the arguments as given.
enum HookOptionOrder {
    static let hookOptions: Set<String> = ["--trace", "--count", "--override", "--replace", "--replace-raw", "--prog"]
    static let modifierOptions: Set<String> = ["--if", "--by", "--top", "--hist-arg"]
    /// Options of a session that take a value (so their value is not read as an option).
    static let valueOptions: Set<String> = ["--sig", "--errno", "--every", "--probability", "--duration", "--interval",
                                            "--output", "--prometheus", "--otlp", "--service", "--memory-budget"]

    /// The command line as the subcommands parse it (see Hookit.main).
    nonisolated(unsafe) static var commandLine: [String] = []

    /// `--hist argN` as `--hist-arg argN`: `--hist` alone stays the latency-histogram flag.
    static func normalized(_ args: [String]) -> [String] {
        var out: [String] = []
        var i = 0
        while i < args.count {
            if args[i] == "--" { out += args[i...]; break }
            if args[i] == "--hist", i + 1 < args.count, HookModifiers.argument(args[i + 1]) != nil {
                out += ["--hist-arg", args[i + 1]]
                i += 2
                continue
            }
            out.append(args[i])
            i += 1
        }
        return out
    }

    /// For each hook option, per value in the order given, the modifiers that follow it.
    static func modifiers(_ args: [String]) throws -> [String: [HookModifiers]] {
        var result: [String: [HookModifiers]] = [:]
        var owner: (option: String, index: Int)?
        var i = 0
        while i < args.count, args[i] != "--" {
            var option = args[i], value: String?
            if option.hasPrefix("--"), let eq = option.firstIndex(of: "=") {
                value = String(option[option.index(after: eq)...])
                option = String(option[..<eq])
            } else if hookOptions.contains(option) || modifierOptions.contains(option) || valueOptions.contains(option), i + 1 < args.count {
                value = args[i + 1]
                i += 1
            }
            i += 1
            guard let value else { continue }
            if hookOptions.contains(option) {
                result[option, default: []].append(HookModifiers())
                owner = (option, result[option]!.count - 1)
            } else if modifierOptions.contains(option) {
                guard let (hook, n) = owner else {
                    throw ValidationError("\(shown(option)) applies to the hook option before it: give --trace, --count or --override first")
                }
                try apply(option, value, to: &result[hook]![n], after: hook)
            }
        }
        return result
    }

    private static func shown(_ option: String) -> String { option == "--hist-arg" ? "--hist argN" : option }

    private static func apply(_ option: String, _ value: String, to m: inout HookModifiers, after hook: String) throws {
        let allowed: Set<String> = switch hook {
        case "--trace", "--override": ["--if"]
        case "--count": modifierOptions
        default: []
        }
        guard allowed.contains(option) else {
            throw ValidationError(allowed.isEmpty
                ? "\(shown(option)) applies to --trace, --count and --override, not to \(hook)"
                : "\(shown(option)) goes with --count, not with \(hook)")
        }
        switch option {
        case "--if":
            guard m.filter == nil else { throw ValidationError("one --if per hook option: combine the tests with && or ||") }
            let e = try FilterParser.parse(value)
            if hook == "--override" && e.decidedAtExit {
                throw ValidationError("--override decides before the call whether to skip it: its --if can test arg0..arg5 and tid, not ret or ns")
            }
            m.filter = e
            m.filterText = value
        case "--by":
            guard m.keyText == nil else { throw ValidationError("one --by per --count") }
            if value == "stack" { m.byStack = true } else { m.key = try HookModifiers.key(value) }
            m.keyText = value
        case "--top":
            guard let n = Int(value), n > 0 else { throw ValidationError("--top '\(value)': expected a positive number of rows") }
            guard m.key != nil else { throw ValidationError("--top N shows the first rows of --by: give --by KEY before it") }
            m.top = n
        default:
            guard let n = HookModifiers.argument(value) else { throw ValidationError("--hist '\(value)': expected arg0..arg5") }
            m.valueHistogram = n
        }
    }
}

/// An interactive command's words: split at spaces, except inside '...' or "..." (an --if
/// expression has spaces).
func commandWords(_ line: String) -> [String] {
    var words: [String] = [], word = "", quote: Character?, inWord = false
    for c in line {
        if let q = quote {
            if c == q { quote = nil } else { word.append(c) }
        } else if c == "'" || c == "\"" {
            quote = c
            inWord = true
        } else if c == " " || c == "\t" {
            if inWord { words.append(word); word = ""; inWord = false }
        } else {
            word.append(c)
            inWord = true
        }
    }
    if inWord { words.append(word) }
    return words
}
