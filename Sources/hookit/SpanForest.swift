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

    mutating func add(_ node: Node, now: Double = Clock.seconds()) {
        node.arrived = now
        // Changed in place (a copy taken out of the dictionary would be copied whole on write).
        Self.adopt(node, from: &waiting[node.call.tid, default: []], count: &count)
    }

    /// The waiting trees of a thread are disjoint intervals (one inside another would be its
    /// child) in the order they ended, so in the order they started too: the ones that started
    /// after this call are a suffix.
    private static func adopt(_ node: Node, from trees: inout [Node], count: inout Int) {
        var first = trees.endIndex
        while first > trees.startIndex && trees[first - 1].start >= node.start { first -= 1 }
        node.children = Array(trees[first...])
        count -= trees.count - first
        trees.removeSubrange(first...)
        trees.append(node)
        count += 1
    }

    /// The trees whose caller is no longer expected: those that arrived `hold` seconds ago, or
    /// all of them (at the end, or when more than `maxWaiting` wait: memory stays bounded).
    mutating func takeDue(now: Double, everything: Bool) -> [Node] {
        var due: [Node] = []
        let cutoff = everything || count > maxWaiting ? Double.infinity : now - hold
        for (tid, trees) in waiting {
            let split = trees.firstIndex { $0.arrived > cutoff } ?? trees.count
            if split == 0 { continue }
            due += trees[..<split]
            waiting[tid] = split == trees.count ? nil : Array(trees[split...])
        }
        count -= due.count
        return due
    }
}
