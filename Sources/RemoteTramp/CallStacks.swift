/// A traced call from its entry to its end, however it ended.
public struct EndedCall: Sendable {
    public enum Ending: String, Sendable {
        case returned
        /// Left without returning: longjmp, an exception, or a later call of its thread found
        /// its frame gone.
        case unwound
        case threadExit = "thread_exit"
        case exit
        case exec
        /// Still running when hookit detached.
        case detached
        /// The ring had no room for an end event of its thread meanwhile: it returned or was
        /// unwound, hookit cannot tell which, nor when.
        case unknown
    }
    public var entry: TraceEvent
    public var ending: Ending
    /// Where it ended (returned, or where the unwinding or exit was seen), in TSC ticks.
    public var endTicks: UInt64
    /// The end event, for a call that returned: its return value and string.
    public var end: TraceEvent?
}

/// Pairs each thread's entry and end events into calls, and ends the calls that will never
/// return: a thread's live calls form a stack whose entry stack pointers grow towards its
/// callers (x86-64 stacks grow down), so an event whose frame lies at or above a call's frame
/// means that call's frame is gone. Events must come in each thread's own order (ThreadOrder).
public struct CallStacks {
    private struct Thread {
        var open: [TraceEvent] = []
        /// Where it called pthread_exit (.threadExit) or exit (.exit): its calls end there.
        var exitMark: (ending: EndedCall.Ending, ticks: UInt64)?
    }
    private var threads: [UInt32: Thread] = [:]
    /// Per process, its latest exit mark: where its other threads end at its exit. (Forked
    /// children write into the same rings: one process's exit is not another's.)
    private var lastExit: [Int32: UInt64] = [:]
    /// The process of a thread (hookit's view), -1 when unknown.
    private let processOf: (UInt32) -> Int32

    /// A later call's entry ends an open one only this close above it: farther up it is more
    /// likely on another stack (a signal's sigaltstack, a coroutine) than a frame left without
    /// returning. longjmp and catches are exact: their marks say where the stack was cut.
    static let sameStackSpan: UInt64 = 1 << 20

    public init(processOf: @escaping (UInt32) -> Int32 = { _ in -1 }) { self.processOf = processOf }

    /// The calls these events end, in the order they ended.
    public mutating func add(_ events: [TraceEvent]) -> [EndedCall] {
        var ended: [EndedCall] = []
        for e in events {
            var t = threads.removeValue(forKey: e.tid) ?? Thread()
            switch e.kind {
            case .entry:
                Self.unwind(&t, at: e, into: &ended) { $0 <= e.stackPointer && e.stackPointer - $0 < Self.sameStackSpan }
                t.open.append(e)
            case .end:
                // Not found: its entry went before hookit read (a forked child returning from a
                // call its parent made) — nothing to pair it with.
                if let i = t.open.lastIndex(where: { $0.stackPointer == e.stackPointer && $0.function == e.function }) {
                    Self.unwind(&t, at: e, into: &ended) { $0 < e.stackPointer }
                    ended.append(EndedCall(entry: t.open.remove(at: i), ending: .returned, endTicks: e.ticks, end: e))
                }
            case .unwind:
                Self.unwind(&t, at: e, into: &ended) { $0 < e.stackPointer }
            case .threadExit:
                t.exitMark = (.threadExit, e.ticks)
            case .exit:
                t.exitMark = (.exit, e.ticks)
                lastExit[processOf(e.tid)] = e.ticks
            }
            if !t.open.isEmpty || t.exitMark != nil { threads[e.tid] = t }
        }
        return ended
    }

    /// Pops the calls on top of the thread's stack whose entry stack pointer satisfies `gone`.
    private static func unwind(_ t: inout Thread, at e: TraceEvent, into ended: inout [EndedCall], gone: (UInt64) -> Bool) {
        while let top = t.open.last, gone(top.stackPointer) {
            t.open.removeLast()
            ended.append(EndedCall(entry: top, ending: top.lostEnds == e.lostEnds ? .unwound : .unknown, endTicks: e.ticks))
        }
    }

    /// The thread is gone (seen by hookit at `ticks`): its open calls end as `ending` says
    /// (.threadExit, .exit when its whole process exited, .exec, .unknown), where it called
    /// pthread_exit or exit if it did, at its process's exit mark for an exit, else at `ticks`.
    public mutating func threadGone(_ tid: UInt32, _ ending: EndedCall.Ending, at ticks: UInt64) -> [EndedCall] {
        guard let t = threads.removeValue(forKey: tid) else { return [] }
        return end(tid, t, ending, at: ticks)
    }

    /// Every open call ends, each thread's as `ending` says for it (its process exited, ran
    /// exec, or hookit detached).
    public mutating func endAll(at ticks: UInt64, _ ending: (UInt32) -> EndedCall.Ending) -> [EndedCall] {
        let ended = threads.flatMap { end($0.key, $0.value, ending($0.key), at: ticks) }
        threads = [:]
        lastExit = [:]
        return ended.sorted { $0.endTicks < $1.endTicks }
    }

    /// A thread's open calls, innermost first: ended at its own exit mark if it has one (but an
    /// exec or an unknown end is what it says), else as `ending` says.
    private func end(_ tid: UInt32, _ t: Thread, _ ending: EndedCall.Ending, at ticks: UInt64) -> [EndedCall] {
        let marked = ending == .exec || ending == .unknown ? nil : t.exitMark
        let (why, at) = marked ?? (ending, ending == .exit ? lastExit[processOf(tid)] ?? ticks : ticks)
        return t.open.reversed().map { EndedCall(entry: $0, ending: why, endTicks: max(at, $0.ticks)) }
    }
}
