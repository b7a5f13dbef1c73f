import ArgumentParser
import CPtrace
import Glibc
import Injector
import RemoteTramp

struct AttachCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Hook functions of a running process with trampolines until told to stop.",
        discussion: """
        --count PATTERN attaches the built-in counter (no library needed). --prog attaches a \
        C program from a library: KIND:PATTERN=/abs/lib.so:SYMBOL[,cookie=N] where KIND is \
        fentry, fexit, fmod_ret or replace (see include/hookit.h). Runs until --duration \
        seconds pass or SIGINT/SIGTERM/SIGHUP, then restores every patched byte and detaches.
        """
    )

    @Argument(help: "The process to hook.")
    var pid: Int32

    @Option(name: .customLong("count"), help: "Count calls of the functions matching PATTERN.")
    var counts: [String] = []

    @Option(name: .customLong("prog"), help: "KIND:PATTERN=/abs/lib.so:SYMBOL[,cookie=N], or KIND:PATTERN=count")
    var progs: [String] = []

    @Option(help: "Seconds to stay attached (default: until interrupted).")
    var duration: Double?

    @Flag(help: "One JSON object per line.")
    var json = false

    @Flag(help: "Read commands on stdin (add, remove, list, detach) and apply each live.")
    var interactive = false

    @Flag(name: .customLong("no-time"), help: "Do not time program runs (counts and misses are still kept).")
    var noTime = false

    @Option(name: .customLong("memory-budget"), help: "Bytes of trampoline code hookit may map in the process.")
    var memoryBudget: Int = 64 << 20

    func run() throws {
        catchTerminationSignals()
        let requests: [HookRequest]
        do {
            requests = try counts.map { try HookRequest(count: $0) } + progs.map { try HookRequest(prog: $0) }
            if requests.isEmpty && !interactive { throw ValidationError("nothing to attach: give --count or --prog (or --interactive)") }
        } catch let e as ValidationError {
            throw e
        } catch {
            fail(error)
        }
        let output = Output(json: json)
        let session: HookSession
        do {
            var options = TrampolineTable.Options()
            options.collectTime = !noTime
            options.memoryBudget = memoryBudget
            session = try HookSession(pid: pid, requests: requests, options: options, output: output)
        } catch {
            fail(error)
        }
        if interactive {
            InteractiveSession(session: session, output: output).run()
        } else {
            session.runUntilDone(duration: duration)
        }
        let ok = session.detach()
        if !ok { Glibc.exit(1) }
    }
}

/// One --count or --prog on the command line.
struct HookRequest {
    var kind: ProgramKind
    var pattern: SymbolPattern
    var program: ProgramSpec
    var cookie: UInt64 = 0
    /// As the user wrote it, for `list`.
    var text: String

    init(count pattern: String) throws {
        text = "--count \(pattern)"
        kind = .fentry
        self.pattern = try SymbolPattern(pattern)
        program = .count
    }

    /// KIND:PATTERN=/abs/lib.so:SYMBOL[,cookie=N]
    init(prog text: String) throws {
        self.text = "--prog \(text)"
        guard let colon = text.firstIndex(of: ":"), let eq = text.firstIndex(of: "="), colon < eq,
              let k = ProgramKind(rawValue: String(text[..<colon])) else {
            throw ValidationError("--prog '\(text)': expected KIND:PATTERN=/abs/lib.so:SYMBOL[,cookie=N] with KIND fentry, fexit, fmod_ret or replace")
        }
        kind = k
        pattern = try SymbolPattern(String(text[text.index(after: colon)..<eq]))
        var rest = String(text[text.index(after: eq)...])
        if let comma = rest.firstIndex(of: ",") {
            let option = rest[rest.index(after: comma)...]
            rest = String(rest[..<comma])
            guard option.hasPrefix("cookie="), let c = UInt64(option.dropFirst(7)) ?? UInt64(option.dropFirst(9), radix: 16) else {
                throw ValidationError("--prog '\(text)': unknown option '\(option)' (only cookie=N)")
            }
            cookie = c
        }
        if rest == "count" {
            program = .count            // the built-in counter, in any kind's list
            return
        }
        guard rest.hasPrefix("/"), let sep = rest.lastIndex(of: ":") else {
            throw ValidationError("--prog '\(text)': the program must be /abs/lib.so:SYMBOL or count")
        }
        program = .user(library: String(rest[..<sep]), symbol: String(rest[rest.index(after: sep)...]))
    }
}
