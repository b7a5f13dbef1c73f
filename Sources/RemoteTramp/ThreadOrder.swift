/// Puts each thread's trace events back in the order it wrote them. A thread that migrates
/// writes its next event into another CPU's ring, and the reader may see that ring first, or
/// find the earlier event's ring stopped at a slot another writer has not published yet. So
/// every event carries its thread's own number (1, 2, 3... trace.c numbers them once a slot is
/// taken, so dropped events leave no gap), and an event waits here until the one before it of
/// its thread has gone out.
struct ThreadOrder {
    /// Passes an event may wait for its thread's earlier one before that one is given up for
    /// lost (a writer killed between taking its slot and publishing it): ~1 s of 20 ms drains.
    static let patience = 50

    private struct Thread {
        // The number to give out next. Every thread numbers from 1 (trace.c's counter is zero in
        // a new thread); one that does not (a forked child, which inherits its parent's count)
        // is said to start anew (due 0: its lowest number goes first), or else waits out the
        // patience below once, like a lost event.
        var due: UInt64 = 1
        var waiting: [TraceEvent] = []
        var passes = 0                  // passes its first waiting event has waited
    }
    private var threads: [UInt32: Thread] = [:]

    /// Events waiting for an earlier one.
    private(set) var waitingCount = 0

    /// `tid` is a new thread whose numbers go on from another's (a forked child's main thread):
    /// its first event waits for no earlier one.
    mutating func startsAnew(_ tid: UInt32) {
        threads[tid, default: Thread()].due = 0
    }

    /// Every event of `tid` that waits, in its order: the thread is gone and all it wrote is
    /// read, so what is missing never comes.
    mutating func releaseAll(of tid: UInt32) -> [TraceEvent] {
        guard var t = threads[tid], !t.waiting.isEmpty else { return [] }
        let out = Self.release(&t, all: true)
        threads[tid] = nil
        waitingCount -= out.count
        return out
    }

    mutating func add(_ events: [TraceEvent]) {
        for e in events { threads[e.tid, default: Thread()].waiting.append(e) }
        waitingCount += events.count
    }

    /// The events that can go out now, in the order they happened; `all`: every event
    /// that waits (the last drain).
    mutating func release(all: Bool = false) -> [TraceEvent] {
        var out: [TraceEvent] = []
        for tid in Array(threads.keys) where !threads[tid]!.waiting.isEmpty {
            out += Self.release(&threads[tid]!, all: all)
            // A thread that waits for nothing keeps only its next number, not the buffer that
            // held its events (a buffer per thread, for every thread the process ever had).
            if threads[tid]!.waiting.isEmpty { threads[tid]!.waiting = [] }
        }
        waitingCount -= out.count
        // Threads come and go: past this many, those that wait for nothing are forgotten (one
        // that comes back waits out the patience once, as a forked child does).
        if threads.count > Self.remembered { threads = threads.filter { !$0.value.waiting.isEmpty } }
        return Self.interleaved(out)
    }

    /// `events` (each thread's in its own order) in time order across threads, each thread's
    /// still in its own: the time stamps of two CPUs may disagree by a little, and an entry
    /// written at a call's return (a filter decided there) carries the call's entry time, while
    /// the pairing of entries and ends (CallStacks) needs each thread's order exactly.
    static func interleaved(_ events: [TraceEvent]) -> [TraceEvent] {
        var byThread: [UInt32: [TraceEvent]] = [:]
        for e in events { byThread[e.tid, default: []].append(e) }
        var next: [UInt32: Int] = [:]
        return events.sorted { $0.ticks < $1.ticks }.map { e in
            let i = next[e.tid, default: 0]
            next[e.tid] = i + 1
            return byThread[e.tid]![i]
        }
    }

    /// Threads whose next number is kept while they wait for nothing.
    static let remembered = 1 << 16

    private static func release(_ t: inout Thread, all: Bool) -> [TraceEvent] {
        t.waiting.sort { $0.sequence < $1.sequence }
        // The events that can go out form a prefix: taken out in one piece, not one by one
        // (removeFirst shifts the rest: a quadratic cost per pass for a busy thread).
        var taken = 0
        for e in t.waiting {
            // Lower than due: a new thread that reuses the id, numbering from 1 again.
            guard e.sequence <= t.due || t.due == 0 || all || t.passes >= patience else { break }
            t.due = e.sequence + 1
            t.passes = 0
            taken += 1
        }
        let out = Array(t.waiting.prefix(taken))
        t.waiting.removeFirst(taken)
        if !t.waiting.isEmpty { t.passes += 1 }
        return out
    }
}
