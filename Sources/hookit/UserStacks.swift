import Injector
import RemoteTramp

/// --stack and --count --by stack: the stack rings, their unwinder, and the folded stacks of
/// counted calls. Stacks are unwound in hookit (StackUnwinder), from copies the process made.
final class UserStacks {
    var ring: StackRing?
    private var unwinder: StackUnwinder?
    /// Folded stacks of --by stack samples ("outer;...;inner"), with their calls.
    private(set) var folded: [String: UInt64] = [:]
    /// Samples of rings given up at an exec: their drops count in the folded file.
    private var carriedDropped: UInt64 = 0

    /// The ring, made (and the runtime pointed at it) the first time.
    func makeRing(_ table: TrampolineTable) throws {
        if ring == nil { ring = try StackRing(table: table) }
    }

    /// The unwinder of the session's current modules (a new one when a library came or went).
    func unwinder(_ symbols: SymbolTable) -> StackUnwinder {
        if let u = unwinder, u.symbols === symbols { return u }
        let u = StackUnwinder(symbols: symbols)
        unwinder = u
        return u
    }

    /// A traced call's stack as the reports show it, innermost first; `[unknown]` ends a stack
    /// that could not be unwound to its outermost frame, `[dropped]` stands for a stack the ring
    /// had no room for.
    func lines(for event: TraceEvent, symbols: SymbolTable) -> [String]? {
        guard let ring else { return nil }
        guard let s = ring.stack(of: event) else { return ["[dropped]"] }
        let u = unwinder(symbols).unwind(s)
        return u.frames.map(\.text) + (u.complete ? [] : ["[unknown]"])
    }

    /// Unwinds the --by stack samples read so far into the folded counts.
    func collectSamples(symbols: SymbolTable) {
        guard let ring else { return }
        let samples = ring.takeSamples()
        if samples.isEmpty { return }
        let u = unwinder(symbols)
        for s in samples {
            let stack = u.unwind(s)
            let names = (stack.complete ? [] : ["[unknown]"]) + stack.frames.reversed().map(\.name)
            folded[names.joined(separator: ";"), default: 0] += 1
        }
    }

    /// Samples the process could not record (a ring was full): a line of their own, so that the
    /// folded counts add up to the calls.
    var dropped: UInt64 { carriedDropped + (ring?.dropped ?? 0) }

    /// The ring of an image the process left by exec: read out and given up.
    func carryOver(symbols: SymbolTable) {
        collectSamples(symbols: symbols)
        carriedDropped += ring?.dropped ?? 0
        ring = nil
        unwinder = nil
    }

    func close(tracee: Tracee, unmap: Bool, symbols: SymbolTable) {
        collectSamples(symbols: symbols)
        ring?.close(tracee: tracee, unmap: unmap)
    }

    /// The folded file: one `outer;...;inner COUNT` line per stack (flamegraph.pl's input),
    /// heaviest first.
    var foldedText: String {
        var rows = folded.sorted { ($1.value, $0.key) < ($0.value, $1.key) }
        if dropped > 0 { rows.append((key: "[dropped]", value: dropped)) }
        return rows.map { "\($0.key) \($0.value)\n" }.joined()
    }
}

extension HookSession {
    /// --stack, --by stack: the stack ring, before the links that write into it go live.
    func makeStackRing() throws {
        try configureRuntime()
        if stacks == nil { stacks = UserStacks() }
        try stacks!.makeRing(table)
        // The modules opened now, while the process runs: `hookit run` may read the last stacks after it exited.
        _ = stacks!.unwinder(symbols)
    }

    /// The stack of a traced call, when --stack asked for it.
    func stack(of e: TraceEvent) -> [String]? {
        options.stacks ? stacks?.lines(for: e, symbols: symbols) : nil
    }

    func drainStackSamples() {
        stacks?.collectSamples(symbols: symbols)
    }

    /// At the end: --folded and --flamegraph written from every sample.
    func writeStackFiles() {
        guard let stacks, options.countByStack else { return }
        stacks.collectSamples(symbols: symbols)
        do {
            if let path = options.folded { try AtomicFile.write(Array(stacks.foldedText.utf8), to: path) }
            if let path = options.flamegraph {
                try AtomicFile.write(Array(FlameGraph(folded: stacks.folded, dropped: stacks.dropped,
                                                title: "\(processName(tracee.pid)) [\(tracee.pid)]").svg.utf8), to: path)
            }
        } catch {
            output.problem("\(error)")
        }
    }
}
