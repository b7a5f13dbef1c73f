import Injector
/// Traced calls rebuilt into trees per thread, from the order the trace ring delivers them.
///
/// Calls on one thread nest properly, and each arrives when it returns, so every call inside C
/// arrives before C. When C arrives, the waiting trees of its thread that started after C did
/// are exactly C's children: they returned before C (they arrived first) and began after it, on
/// the same thread, so within it; a grandchild was already claimed by its own parent, which
/// arrived before C. Start times alone decide it: ends, converted from another tick count,
/// could be a nanosecond off. C then waits as a tree of its own, for a caller that may come.
struct SpanForest {
    final class Node {
        let call: TracedCall
        let start: Int64
        let end: Int64
        let spanID: String
        var children: [Node] = []
        /// When it arrived (seconds, monotonic): a tree waits `hold` seconds for a caller.
        var arrived = 0.0

        init(call: TracedCall, start: Int64, end: Int64, spanID: String) {
            self.call = call
            self.start = start
            self.end = end
            self.spanID = spanID
        }
    }

    let hold: Double
    let maxWaiting: Int
    /// Trees waiting for a caller, per thread, in arrival order.
    private var waiting: [UInt32: [Node]] = [:]
    private var count = 0

    init(hold: Double, maxWaiting: Int) {
        self.hold = hold
        self.maxWaiting = maxWaiting
    }

    mutating func add(_ node: Node, now: Double = Injector.Clock.seconds()) {
        node.arrived = now
        var trees = waiting[node.call.tid] ?? []
        var kept: [Node] = []
        for t in trees {
            if t.start >= node.start { node.children.append(t) } else { kept.append(t) }
        }
        count -= trees.count - kept.count
        trees = kept
        trees.append(node)
        count += 1
        waiting[node.call.tid] = trees
    }

    /// The trees whose caller is no longer expected: those that arrived `hold` seconds ago,
    /// the oldest ones beyond `maxWaiting`, or all of them.
    mutating func takeDue(now: Double, everything: Bool) -> [Node] {
        var due: [Node] = []
        let cutoff = everything ? Double.infinity : now - hold
        for (tid, trees) in waiting {
            let split = trees.firstIndex { $0.arrived > cutoff } ?? trees.count
            if split == 0 { continue }
            due += trees[..<split]
            waiting[tid] = split == trees.count ? nil : Array(trees[split...])
        }
        count -= due.count
        if count > maxWaiting {
            // Too many waiting: the oldest go now, whatever might still enclose them.
            let all = waiting.flatMap { tid, trees in trees.map { (tid, $0) } }.sorted { $0.1.arrived < $1.1.arrived }
            let excess = all.prefix(count - maxWaiting)
            let gone = Set(excess.map { ObjectIdentifier($0.1) })
            due += excess.map(\.1)
            for tid in Set(excess.map(\.0)) { waiting[tid] = waiting[tid]?.filter { !gone.contains(ObjectIdentifier($0)) } }
            count -= excess.count
        }
        return due
    }
}
